"""DiT and Skip-DiT, Latte-T2V and Latte-T2V-skip as native diffusers parts: models, a class-conditional pipeline,
and the folders ``skipdit convert --to diffusers`` writes.

    from skipdit.diffusers import SkipDiTPipeline
    pipe = SkipDiTPipeline.from_pretrained("DiT-XL-2-skip-diffusers/")       # a local folder; nothing downloads
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    images = pipe(class_labels=[207, 360], num_inference_steps=20).images
    skipdit.cache.enable(pipe, "skip:N=2,b=1")                                # Skip-Cache through the model's seam

:class:`SkipDiTTransformer2DModel` owns skipdit's own :class:`~skipdit.models.DiT` (``.dit``), so its numerics
are the official ones by construction, the timestep embedding included (DiT's frequencies, shift 0; diffusers'
``DiTTransformer2DModel`` uses shift 1, see :mod:`skipdit.convert.diffusers`). Its state dict is the DiT's,
official key names under the one prefix ``dit.`` (``dit.x_embedder.proj.weight``, ``dit.skip_norms.0.weight``):
the DiT is a child module rather than the model itself because diffusers' ``ConfigMixin`` owns
``self.config`` and its loader fills parameters module by module, so aliasing the DiT's modules onto the wrapper
would break; with the prefix ``skipdit.load`` reads the folder by stripping it, and ``pipe.transformer.dit`` is
a skipdit model that ``skipdit.generate``, the caches and the analyses take as it is.

:class:`SkipDiTPipeline` is called like diffusers' ``DiTPipeline`` and runs any diffusers scheduler. Guidance is
skipdit's own (:func:`skipdit.diffusion.classifier_free_guidance`: all noise channels, or the official 3-channel
``dit_legacy`` mode, the variance channels from the conditional branch), with the model's own null label, so
any class count works. The learned-variance channels go to the scheduler only if it uses them
(``variance_type`` ``learned`` / ``learned_range``); otherwise ε alone is passed, as diffusers' DiT and Latte
pipelines do.

:class:`SkipLatteTransformer3DModel` does the same for Latte-T2V(-skip) (``.latte``, keys under ``latte.``), with
diffusers' ``LatteTransformer3DModel`` config and call signature, so diffusers' own ``LattePipeline`` runs it (and
``skipdit.cache.enable`` caches it). Class-to-video Latte(-skip) has no diffusers form: diffusers has no
class-conditional video pipeline.

This module needs diffusers (the ``diffusers`` extra); importing it without diffusers is a :class:`UserError`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError

try:
    from diffusers import (  # ModelMixin etc. must be names of this module: diffusers' loader looks them up here
        AutoencoderKL,
        ConfigMixin,
        DDIMScheduler,
        DiffusionPipeline,
        DiTPipeline,
        ImagePipelineOutput,
        LattePipeline,
        ModelMixin,
        SchedulerMixin,
    )
    from diffusers.configuration_utils import register_to_config
    from diffusers.models.modeling_outputs import Transformer2DModelOutput
    from diffusers.utils.torch_utils import randn_tensor
except ImportError as err:
    raise UserError("skipdit.diffusers needs diffusers: pip install 'skipdit[diffusers]'") from err

from .assets import resolve_weights
from .convert.checkpoint import LoadReport, load
from .convert.diffusers import SKIPDIT_CLASS, build_diffusers_dit, diffusers_dit_kwargs, dit_fields
from .convert.files import check_writable_place
from .convert.latte import latte_t2v_fields, read_model_config
from .diffusion.guidance import CFG_MODES, classifier_free_guidance
from .models.dit import DiT, DiTConfig
from .models.latte_t2v import LatteT2V, LatteT2VConfig
from .models.layers import sincos_2d
from .models.presets import arch_of
from .vae import VAEDecoder, load_vae

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
PIXEL_CHANNELS = (1, 3)  # a model with these channels and no VAE makes pixels: grey or RGB


def dit_scheduler() -> DDIMScheduler:
    """The DiT chain as a diffusers scheduler: 1000 steps, linear betas 1e-4 .. 0.02, ε-prediction, no clipping,
    the final step to alpha 1 (what diffusers' DiT conversion writes). Its default "leading" spacing with offset 0
    visits t = 1000/N * k, the steps of skipdit's ``respacing="ddim{N}"`` when N divides 1000."""
    return DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                         prediction_type="epsilon", clip_sample=False, set_alpha_to_one=True, steps_offset=0,
                         timestep_spacing="leading")


# -- the model --------------------------------------------------------------------------------------------------
class SkipDiTTransformer2DModel(ModelMixin, ConfigMixin):
    """DiT / Skip-DiT (``long_skip``) as a diffusers model. The config holds the :class:`DiTConfig` fields, with
    its defaults; ``forward(hidden_states, timestep, class_labels)`` is the DiT's (``class_labels`` =
    ``num_classes`` is the null label). ``cache=`` is the DiT's cache seam (``skipdit.cache.enable`` uses it)."""

    _supports_gradient_checkpointing = True  # the DiT's own flag (LongSkipStack.run_units)

    @register_to_config
    def __init__(
        self,
        input_size: int = DiTConfig.input_size,
        patch_size: int = DiTConfig.patch_size,
        in_channels: int = DiTConfig.in_channels,
        hidden_size: int = DiTConfig.hidden_size,
        depth: int = DiTConfig.depth,
        num_heads: int = DiTConfig.num_heads,
        mlp_ratio: float = DiTConfig.mlp_ratio,
        num_classes: int = DiTConfig.num_classes,
        class_dropout_prob: float = DiTConfig.class_dropout_prob,
        learn_sigma: bool = DiTConfig.learn_sigma,
        long_skip: bool = DiTConfig.long_skip,
        skip_init: str = DiTConfig.skip_init,
    ):
        super().__init__()
        self.dit = DiT(DiTConfig(
            input_size=input_size, patch_size=patch_size, in_channels=in_channels, hidden_size=hidden_size,
            depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, num_classes=num_classes,
            class_dropout_prob=class_dropout_prob, learn_sigma=learn_sigma, long_skip=long_skip, skip_init=skip_init,
        ))

    @classmethod
    def from_skipdit(cls, model: DiT) -> SkipDiTTransformer2DModel:
        """A diffusers model holding a copy of ``model``'s weights, on its device and in its dtype, in eval mode."""
        if not isinstance(model, DiT):
            raise UserError(f"SkipDiTTransformer2DModel wraps a DiT / Skip-DiT, not a {type(model).__name__}")
        out = cls(**dataclasses.asdict(model.config))
        out.dit.load_state_dict(model.state_dict(), strict=True)
        parameter = next(model.parameters())
        out.dit.to(device=parameter.device, dtype=parameter.dtype)  # not out.to(dtype=): diffusers warns on that
        return out.eval()

    def forward(self, hidden_states: torch.Tensor, timestep, class_labels, return_dict: bool = True, *,
                cache=None):
        """``hidden_states`` (N, C, H, W), ``timestep`` (N,) or a scalar on the 0..999 scale, ``class_labels``
        (N,). Returns ``.sample`` (N, C_out, H, W): ε, then the variance channels with learned sigma."""
        device = hidden_states.device
        t = torch.as_tensor(timestep, device=device)
        if t.ndim == 0:
            t = t.expand(hidden_states.shape[0])
        y = torch.as_tensor(class_labels, device=device)
        out = self.dit(hidden_states, t, y, cache=cache)  # (N, C_out, H, W)
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)


class SkipLatteTransformer3DModel(ModelMixin, ConfigMixin):
    """Latte-T2V / Latte-T2V-skip (``long_skip``) as a diffusers model that diffusers' own ``LattePipeline``
    runs: its config is diffusers' ``LatteTransformer3DModel`` config (the fields the pipeline reads, such as
    ``sample_size`` and ``in_channels``, by their names) plus ``long_skip``, ``skip_init`` and
    ``caption_dropout_prob``; ``forward`` takes ``LatteTransformer3DModel``'s arguments. It owns skipdit's own
    :class:`~skipdit.models.LatteT2V` (``.latte``); the state dict is that model's, in diffusers' key names (ours
    are diffusers' plus ``skip_norms`` / ``skip_linears``), under the prefix ``latte.``."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = LatteT2VConfig.num_heads,
        attention_head_dim: int = LatteT2VConfig.hidden_size // LatteT2VConfig.num_heads,
        in_channels: int = LatteT2VConfig.in_channels,
        out_channels: int | None = None,
        num_layers: int = LatteT2VConfig.depth,
        sample_size: int = LatteT2VConfig.input_size,
        patch_size: int = LatteT2VConfig.patch_size,
        caption_channels: int = LatteT2VConfig.caption_channels,
        video_length: int = LatteT2VConfig.num_frames,
        norm_eps: float = LatteT2VConfig.norm_eps,
        attention_bias: bool = LatteT2VConfig.attention_bias,
        norm_type: str = "ada_norm_single",
        activation_fn: str = "gelu-approximate",
        norm_elementwise_affine: bool = False,
        long_skip: bool = LatteT2VConfig.long_skip,
        skip_init: str = LatteT2VConfig.skip_init,
        caption_dropout_prob: float = LatteT2VConfig.caption_dropout_prob,
    ):
        super().__init__()
        raw = {k: v for k, v in locals().items() if k not in ("self", "__class__") and k not in _LATTE_OURS}
        fields = latte_t2v_fields(raw, type(self).__name__)
        self.latte = LatteT2V(LatteT2VConfig(**fields, long_skip=long_skip, skip_init=skip_init,
                                             caption_dropout_prob=caption_dropout_prob))

    @classmethod
    def from_skipdit(cls, model: LatteT2V) -> SkipLatteTransformer3DModel:
        """A diffusers model holding a copy of ``model``'s weights, on its device and in its dtype, in eval mode."""
        if not isinstance(model, LatteT2V):
            raise UserError(f"SkipLatteTransformer3DModel wraps a Latte-T2V / Latte-T2V-skip, not a "
                            f"{type(model).__name__}")
        config = model.config
        if config.mlp_ratio != 4.0:
            raise UserError("diffusers' Latte layout has MLP ratio 4 only")
        out = cls(num_attention_heads=config.num_heads, attention_head_dim=config.hidden_size // config.num_heads,
                  in_channels=config.in_channels, out_channels=config.out_channels, num_layers=config.depth,
                  sample_size=config.input_size, patch_size=config.patch_size,
                  caption_channels=config.caption_channels, video_length=config.num_frames, norm_eps=config.norm_eps,
                  attention_bias=config.attention_bias, long_skip=config.long_skip, skip_init=config.skip_init,
                  caption_dropout_prob=config.caption_dropout_prob)
        if out.latte.config != config:  # every field has its diffusers name above
            raise UserError(f"this Latte-T2V config has no diffusers form: {config}")
        out.latte.load_state_dict(model.state_dict(), strict=True)
        parameter = next(model.parameters())
        out.latte.to(device=parameter.device, dtype=parameter.dtype)
        return out.eval()

    def forward(self, hidden_states: torch.Tensor, timestep=None, encoder_hidden_states: torch.Tensor | None = None,
                encoder_attention_mask: torch.Tensor | None = None, enable_temporal_attentions: bool = True,
                return_dict: bool = True, *, cache=None):
        """``hidden_states`` (N, C, F, H, W), ``timestep`` (N,) or a scalar on the 0..999 scale,
        ``encoder_hidden_states`` (N, L, caption_channels), ``encoder_attention_mask`` (N, L) with 1 = keep, or
        diffusers' bias form (N, 1, L) with 0 = keep. Returns ``.sample`` (N, C_out, F, H, W)."""
        if encoder_hidden_states is None:
            raise UserError("Latte-T2V needs encoder_hidden_states (the caption embeddings)")
        if timestep is None:
            raise UserError("Latte-T2V needs a timestep")
        t = torch.as_tensor(timestep, device=hidden_states.device)
        if t.ndim == 0:
            t = t.expand(hidden_states.shape[0])
        mask = encoder_attention_mask
        if mask is not None:
            mask = mask[:, 0] == 0 if mask.ndim == 3 else mask.bool()  # (N, L): True = attend
        out = self.latte(hidden_states, t, encoder_hidden_states, mask, cache=cache,
                         temporal=enable_temporal_attentions)
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)


# the wrapper's config entries that are skipdit's, not diffusers' Latte config
_LATTE_OURS = ("long_skip", "skip_init", "caption_dropout_prob")


# -- the pipeline -----------------------------------------------------------------------------------------------
class SkipDiTPipeline(DiffusionPipeline):
    """Class-conditional sampling with a :class:`SkipDiTTransformer2DModel`, any diffusers ``scheduler`` and an
    optional ``vae`` (``AutoencoderKL``). Without a VAE, a 1- or 3-channel model is a pixel model whose samples are
    the images; a latent model without a VAE returns latents only (``output_type="latent"``)."""

    model_cpu_offload_seq = "transformer->vae"
    _optional_components = ["vae"]

    def __init__(self, transformer: SkipDiTTransformer2DModel, scheduler: SchedulerMixin,
                 vae: AutoencoderKL | None = None):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler, vae=vae)

    @classmethod
    def from_skipdit(cls, model, scheduler: SchedulerMixin | None = None, vae=None) -> SkipDiTPipeline:
        """A pipeline around a skipdit DiT / Skip-DiT (or a built-in name or checkpoint path, as
        :func:`skipdit.load` takes), with :func:`dit_scheduler` unless ``scheduler`` is given. ``vae``: an
        ``AutoencoderKL``, or a :func:`skipdit.load_vae` decoder."""
        if isinstance(model, (str, os.PathLike)):
            model = load(model)
        transformer = model if isinstance(model, SkipDiTTransformer2DModel) else \
            SkipDiTTransformer2DModel.from_skipdit(model)
        autoencoder = vae.vae if isinstance(vae, VAEDecoder) else vae
        return cls(transformer=transformer, scheduler=scheduler or dit_scheduler(), vae=autoencoder)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' loader, for local folders. A folder whose ``transformer/`` is diffusers' own
        ``DiTTransformer2DModel`` (a vanilla 1000-class export, or a DiT pipeline folder) is loaded through
        :func:`skipdit.load` into a :class:`SkipDiTTransformer2DModel`: the same weights, DiT's timestep
        frequencies."""
        folder = Path(pretrained_model_name_or_path)
        if "transformer" not in kwargs and (folder / "transformer" / "config.json").is_file():
            _, raw = read_model_config(folder)
            if raw.get("_class_name") != SKIPDIT_CLASS:
                transformer = SkipDiTTransformer2DModel.from_skipdit(load(folder))
                dtype = kwargs.get("torch_dtype")
                if isinstance(dtype, torch.dtype):
                    transformer.dit.to(dtype)
                kwargs["transformer"] = transformer
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | Sequence[int],
        guidance_scale: float = 4.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 50,
        output_type: str = "pil",
        return_dict: bool = True,
        guidance_mode: str = "all",
    ):
        """One image per class label. ``guidance_scale`` > 1 guides (diffusers' convention: 1 or less is off);
        ``guidance_mode="dit_legacy"`` guides the first 3 channels only, as the official DiT sampling does.
        ``generator``: one for the batch, or one per sample, so that sample *i* depends only on its own (its
        initial noise and any noise the scheduler draws). ``output_type``: ``"pil"``, ``"np"`` (N, H, W, C) in
        [0, 1], ``"pt"`` (N, C, H, W) in [0, 1], or ``"latent"`` (the samples as the model makes them)."""
        dit = self.transformer.dit
        labels = _labels(class_labels, dit.num_classes)
        n = len(labels)
        scale = _guidance_scale(guidance_scale)
        if guidance_mode not in CFG_MODES:
            raise UserError(f"unknown guidance mode {guidance_mode!r}; valid: {', '.join(CFG_MODES)}")
        if scale > 1 and dit.y_embedder.embedding_table.num_embeddings <= dit.null_label:
            raise UserError("this model has no null-label embedding (trained without label dropout): "
                            "guidance needs one; use guidance_scale=1")
        if isinstance(generator, list) and len(generator) != n:
            raise UserError(f"{len(generator)} generators for {n} class labels; give one, or one per sample")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, numbers.Integral) \
                or num_inference_steps < 1:
            raise UserError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
        self._check_output(output_type, dit.in_channels)

        device, dtype = self._execution_device, self.transformer.dtype
        latents = randn_tensor((n, *dit.sample_shape()), generator=generator, device=device, dtype=dtype)
        latents = latents * self.scheduler.init_noise_sigma
        y = torch.tensor(labels, device=device)
        cond, uncond = (y,), (torch.full_like(y, dit.null_label),)

        def model_fn(x, t, labels, branch):  # one call per step (guidance batched): a cache's "both" branch
            return self.transformer(x, t, labels).sample

        guided = classifier_free_guidance(model_fn, max(scale, 1.0), dit.in_channels, mode=guidance_mode)
        uses_variance = self.scheduler.config.get("variance_type") in ("learned", "learned_range")
        step_kwargs = {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters \
            else {}
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for t in self.progress_bar(self.scheduler.timesteps):
            x = self.scheduler.scale_model_input(latents, t)
            out = guided(x, t.to(device).reshape(1).expand(n), cond, uncond)  # (N, C_out, H, W)
            if dit.learn_sigma and not uses_variance:
                out = out[:, : dit.in_channels]  # ε only: the scheduler has its own variance
            latents = self.scheduler.step(out, t, latents, **step_kwargs).prev_sample

        images = latents if output_type == "latent" else self._to_images(latents, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _check_output(self, output_type: str, channels: int) -> None:
        if output_type not in OUTPUT_TYPES:
            raise UserError(f"unknown output_type {output_type!r}; valid: {', '.join(OUTPUT_TYPES)}")
        if self.vae is not None and self.vae.config.latent_channels != channels:
            raise UserError(f"the VAE has {self.vae.config.latent_channels} latent channels, the model makes "
                            f"{channels}")
        if output_type != "latent" and self.vae is None and channels not in PIXEL_CHANNELS:
            raise UserError(f"this model makes {channels}-channel latents and the pipeline has no VAE: pass "
                            "vae=AutoencoderKL(...) to the pipeline, or use output_type='latent'")

    def _to_images(self, latents: torch.Tensor, output_type: str):
        if self.vae is not None:
            z = latents / self.vae.config.scaling_factor
            pixels = self.vae.decode(z.to(self.vae.dtype)).sample
        else:
            pixels = latents  # a pixel model: its samples are images in [-1, 1]
        images = (pixels.float() / 2 + 0.5).clamp(0, 1)  # (N, C, H, W)
        if output_type == "pt":
            return images
        images = images.cpu().permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
        return self.numpy_to_pil(images) if output_type == "pil" else images


def _labels(class_labels, num_classes: int) -> list[int]:
    values = [class_labels] if isinstance(class_labels, numbers.Integral) else list(class_labels)
    if not values:
        raise UserError("no class labels given")
    if any(isinstance(y, bool) or not isinstance(y, numbers.Integral) for y in values):
        raise UserError(f"class labels must be integers, got {values[:4]}")
    bad = [int(y) for y in values if not 0 <= y < num_classes]
    if bad:
        raise UserError(f"class label {bad[0]} out of range: this model has classes 0..{num_classes - 1}")
    return [int(y) for y in values]


def _guidance_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
        raise UserError(f"guidance_scale must be a finite number, got {scale!r}")
    return float(scale)


# -- the folder `skipdit convert SRC OUT_DIR --to diffusers` writes ---------------------------------------------------
@dataclass
class Export:
    """What :func:`export_pipeline` wrote: the folder, the model, how it was read, and the folder's layout:
    ``"skipdit"`` (a :class:`SkipDiTPipeline` folder), ``"dit"`` (diffusers' ``DiTPipeline`` folder with a
    ``DiTTransformer2DModel``, which :class:`SkipDiTPipeline` loads too) or ``"latte"`` (diffusers'
    ``LattePipeline`` folder with a :class:`SkipLatteTransformer3DModel` and no text encoder)."""

    path: Path
    model: DiT | LatteT2V
    report: LoadReport
    layout: str
    components: tuple[str, ...]


def diffusers_dit_compatible(model: DiT) -> bool:
    """Whether diffusers' ``DiTPipeline`` can run ``model`` and the folder reads back as the same model, bit for
    bit: no long skips, 1000 classes (its null label is hard-coded), MLP ratio 4, a null-label row, every
    other config field at what a ``DiTTransformer2DModel`` folder reads back as, and the standard sin-cos table
    (diffusers recomputes it)."""
    config = model.config
    if config.long_skip or config.num_classes != 1000 or config.mlp_ratio != 4.0:
        return False
    readback = DiTConfig(**dit_fields(diffusers_dit_kwargs(config), "the exported config"))
    grid = config.input_size // config.patch_size
    table = sincos_2d(config.hidden_size, grid).float().unsqueeze(0).to(model.pos_embed.device)
    return readback == config and torch.equal(model.pos_embed.detach().float(), table)


def export_pipeline(
    src, out_dir, preset: str | None = None, *, vae=None, skip_init: str | None = None, **overrides,
) -> Export:
    """Write ``src`` (anything :func:`skipdit.load` reads holding a DiT / Skip-DiT or a Latte-T2V(-skip)) as a
    diffusers pipeline folder at ``out_dir``: ``model_index.json``, ``transformer/``, ``scheduler/``
    (:func:`dit_scheduler`) and, with ``vae`` (a local ``AutoencoderKL`` folder), ``vae/``. A vanilla DiT that
    :func:`diffusers_dit_compatible` accepts is written as diffusers' own ``DiTPipeline`` folder, any other DiT as a
    :class:`SkipDiTPipeline` folder, a Latte-T2V as diffusers' ``LattePipeline`` folder with a
    :class:`SkipLatteTransformer3DModel` (its text encoder is not part of the model: ``from_pretrained(out_dir,
    tokenizer=..., text_encoder=...)``, or pass ``prompt_embeds``). :func:`skipdit.load` reads them all. Paths are
    checked before any work, and the folder appears whole or not at all (written next to ``out_dir``, then
    renamed)."""
    out = check_output_folder(out_dir)
    source = resolve_weights(src)
    if source.exists() and (source.resolve() == out.resolve() or source.resolve().is_relative_to(out.resolve())
                            or out.resolve().is_relative_to(source.resolve())):
        raise UserError(f"output {out} overlaps the source {src}; give a folder outside it")
    vae_dir = None if vae is None else check_vae_folder(vae)
    model, report = load(src, preset, skip_init=skip_init, return_report=True, **overrides)
    arch = arch_of(model.config)
    if arch not in ("dit", "latte_t2v"):
        raise UserError(f"--to diffusers writes DiT / Skip-DiT (class-to-image) and Latte-T2V(-skip) (text-to-video) "
                        f"pipelines; {src} holds a {arch} model (diffusers has no class-to-video pipeline)")
    autoencoder = None
    if vae_dir is not None:
        decoder = load_vae(vae_dir)
        if decoder.latent_channels != model.in_channels:
            raise UserError(f"the VAE in {vae_dir} has {decoder.latent_channels} latent channels, the model takes "
                            f"{model.in_channels}")
        autoencoder = decoder.vae
    if arch == "latte_t2v":
        layout = "latte"  # diffusers' LattePipeline, without its text encoder: pass one, or prompt embeddings
        pipe = LattePipeline(tokenizer=None, text_encoder=None, vae=autoencoder,
                             transformer=SkipLatteTransformer3DModel.from_skipdit(model), scheduler=dit_scheduler())
    elif diffusers_dit_compatible(model):
        layout = "dit"
        pipe = DiTPipeline(transformer=build_diffusers_dit(model), vae=autoencoder, scheduler=dit_scheduler())
    else:
        layout = "skipdit"
        pipe = SkipDiTPipeline.from_skipdit(model, vae=autoencoder)
    components = ("transformer", "scheduler", *(("vae",) if autoencoder is not None else ()))
    _write_folder(pipe, out)
    return Export(out, model, report, layout, components)


def check_output_folder(path) -> Path:
    """``path`` as a Path if a pipeline folder can be written there: not a file, empty or absent or an earlier
    pipeline folder (``model_index.json``, which is replaced), in a writable place."""
    path = Path(path)
    if path.is_file():
        raise UserError(f"output {path} is a file; --to diffusers writes a pipeline folder")
    if path.is_dir() and any(path.iterdir()) and not (path / "model_index.json").is_file():
        raise UserError(f"output folder {path} is not empty and holds no pipeline (model_index.json); "
                        "give a new or empty folder")
    return check_writable_place(path)


def check_vae_folder(path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--vae {path} is not a folder: give a local diffusers AutoencoderKL folder "
                        "(e.g. a copy of stabilityai/sd-vae-ft-ema)")
    folder = path / "vae" if (path / "vae" / "config.json").is_file() else path  # a pipeline folder works too
    if not (folder / "config.json").is_file():
        raise UserError(f"no VAE at {path}: expected a diffusers AutoencoderKL folder with config.json")
    return path


def _write_folder(pipe, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        pipe.save_pretrained(partial, safe_serialization=True)
        if out.exists():
            shutil.rmtree(out)  # empty, or an earlier pipeline folder (check_output_folder)
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


__all__ = ["Export", "SkipDiTPipeline", "SkipDiTTransformer2DModel", "SkipLatteTransformer3DModel",
           "diffusers_dit_compatible", "dit_scheduler", "export_pipeline"]
