import argparse
import dataclasses
import json

import pytest
import torch

import skipdit
from skipdit.convert import detect_format, infer_config, load, read_checkpoint, save
from skipdit.convert.diffusers import build_diffusers_dit, from_diffusers_dit, to_diffusers_dit
from skipdit.errors import UserError

from .conftest import tiny_model

X, T, Y = torch.randn(2, 3, 8, 8), torch.tensor([0, 999]), torch.tensor([7, 10])


def test_safetensors_round_trip(tmp_path, skip_model):
    path = save(skip_model, tmp_path / "m.safetensors")
    loaded = skipdit.load(path)
    assert loaded.config == skip_model.config and not loaded.training
    assert torch.equal(loaded(X, T, Y), skip_model(X, T, Y))
    with pytest.raises(ValueError, match="must end in .safetensors"):
        save(skip_model, tmp_path / "m.pt")


@pytest.mark.parametrize("layout", ["raw", "model", "train"])
def test_official_pt_layouts(tmp_path, skip_model, layout):
    state = skip_model.state_dict()
    decoy = {k: torch.zeros_like(v) for k, v in state.items()}
    payload = {
        "raw": state,
        "model": {"model": state},
        # a full official training checkpoint: EMA preferred over the raw weights; args is a Namespace
        "train": {"model": decoy, "ema": state, "opt": {"state": {}}, "args": argparse.Namespace(lr=1e-4)},
    }[layout]
    torch.save(payload, tmp_path / "ckpt.pt")
    model, report = load(tmp_path / "ckpt.pt", return_report=True)
    assert report.source_format == "dit" and report.ok and not report.new
    assert model.config == skip_model.config  # shapes give everything; heads from the DiT-S width
    assert torch.equal(model(X, T, Y), skip_model(X, T, Y))


def test_infer_config_from_shapes(skip_model):
    cfg = infer_config(skip_model.state_dict())
    assert (cfg.depth, cfg.hidden_size, cfg.num_heads, cfg.input_size, cfg.num_classes) == (4, 384, 6, 8, 10)
    assert cfg.long_skip and cfg.learn_sigma and cfg.in_channels == 3


def test_vanilla_checkpoint_initialises_skip_dit(tmp_path, vanilla_model):
    torch.save(vanilla_model.state_dict(), tmp_path / "dit.pt")
    with pytest.raises(ValueError, match="vanilla DiT checkpoint.*skip_init"):
        load(tmp_path / "dit.pt", "DiT-S/2-skip", depth=4)
    model, report = load(tmp_path / "dit.pt", "DiT-S/2-skip", depth=4, skip_init="xavier", return_report=True)
    assert model.has_long_skips and len(report.new) == 2 * 4  # 2 LSCs x (norm w, b, linear w, b)
    assert all(k.startswith(("skip_norms.", "skip_linears.")) for k in report.new)
    assert torch.count_nonzero(model.skip_linears[0].linear.bias) == 0  # xavier: zero bias
    assert torch.equal(model.blocks[1].attn.qkv.weight, vanilla_model.blocks[1].attn.qkv.weight)


def test_other_architecture_is_rejected_with_the_keys(tmp_path, skip_model):
    torch.save(skip_model.state_dict(), tmp_path / "s.pt")
    with pytest.raises(ValueError, match=r"mis-shaped .*x_embedder.proj.weight \(model \(768, 3, 2, 2\)"):
        load(tmp_path / "s.pt", "DiT-B/2-skip", depth=4)
    with pytest.raises(ValueError, match=r"unexpected 8 keys: skip_norms.0.weight"):
        load(tmp_path / "s.pt", "DiT-S/2", depth=4)
    with pytest.raises(ValueError, match=r"mis-shaped 1 keys: pos_embed \(model \(1, 64, 384\)"):
        load(tmp_path / "s.pt", "DiT-S/2-skip", depth=4, input_size=16)  # e.g. --image-size disagrees
    with pytest.raises(ValueError, match=r"missing 48 keys: blocks.4"):  # 4 blocks x 10 + 2 LSCs x 4
        load(tmp_path / "s.pt", "DiT-S/2-skip", depth=8)


def test_unreadable_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"bad.pt is a text file, not a PyTorch checkpoint"):
        read_checkpoint(bad)
    broken = tmp_path / "bad.safetensors"
    broken.write_bytes(b"\x00" * 16)
    with pytest.raises(UserError, match="bad.safetensors is not a valid safetensors file"):
        read_checkpoint(broken)
    with pytest.raises(UserError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(UserError, match="is a folder, not a checkpoint file"):
        read_checkpoint(tmp_path)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a DiT"):
        load(tmp_path / "other.pt")
    torch.save({"args": 1}, tmp_path / "nostate.pt")
    with pytest.raises(ValueError, match="no state dict found"):
        read_checkpoint(tmp_path / "nostate.pt")


def test_stored_config_is_checked(tmp_path, skip_model):
    """Our safetensors' metadata is input too: malformed JSON or unknown fields are one clear error."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in skip_model.state_dict().items()}
    save_file(tensors, tmp_path / "json.safetensors", metadata={"skipdit_config": "{oops", "skipdit_arch": "dit"})
    with pytest.raises(UserError, match="skipdit_config metadata of .*json.safetensors is not valid JSON"):
        load(tmp_path / "json.safetensors")
    save_file(tensors, tmp_path / "field.safetensors", metadata={"skipdit_config": '{"depht": 4}'})
    with pytest.raises(UserError, match="unknown fields depht"):
        load(tmp_path / "field.safetensors")
    save_file(tensors, tmp_path / "arch.safetensors", metadata={"skipdit_config": "{}", "skipdit_arch": "unet"})
    with pytest.raises(UserError, match="unknown architecture 'unet'"):
        load(tmp_path / "arch.safetensors")


def test_diffusers_layout_round_trip(vanilla_model):
    state = vanilla_model.state_dict()
    theirs = to_diffusers_dit(state, depth=4)
    assert detect_format(theirs) == "diffusers-dit"
    assert "transformer_blocks.3.norm1.emb.class_embedder.embedding_table.weight" in theirs
    back = from_diffusers_dit(theirs, input_size=8)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    with pytest.raises(ValueError, match="no long skips"):
        to_diffusers_dit(tiny_model().state_dict(), depth=4)


def test_parity_with_diffusers_dit(vanilla_model):
    """Independent implementation: diffusers' DiTTransformer2DModel with our weights converted.

    diffusers builds timestep features with downscale_freq_shift=1 where DiT uses 0 (peers §1.4);
    build_diffusers_dit(exact=True) sets it to 0 on every block, which makes the two agree."""
    pytest.importorskip("diffusers")
    theirs = build_diffusers_dit(vanilla_model)
    for t in (0, 500, 999):
        tt = torch.full((2,), t)
        ours = vanilla_model(X, tt, Y)
        ref = theirs(X, timestep=tt, class_labels=Y).sample
        torch.testing.assert_close(ref, ours, atol=1e-5, rtol=1e-5)
    stock = build_diffusers_dit(vanilla_model, exact=False)
    at = lambda m, t: m(X, timestep=torch.full((2,), t), class_labels=Y).sample  # noqa: E731
    torch.testing.assert_close(at(stock, 0), vanilla_model(X, torch.zeros(2), Y), atol=1e-5, rtol=1e-5)
    diff = (at(stock, 500) - vanilla_model(X, torch.full((2,), 500), Y)).abs().max()
    # the frequency shift makes the expected ~1e-3 difference; eps 1e-5 vs 1e-6 is below 1e-5 (see t = 0)
    assert diff > 1e-4


def test_diffusers_state_dict_loads(tmp_path, vanilla_model):
    from safetensors.torch import save_file

    save_file(to_diffusers_dit(vanilla_model.state_dict(), depth=4), tmp_path / "d.safetensors")
    with pytest.raises(ValueError, match="pass input_size"):
        load(tmp_path / "d.safetensors")
    model = load(tmp_path / "d.safetensors", input_size=8)
    assert torch.equal(model(X, T, Y), vanilla_model(X, T, Y))


def test_convert_keeps_the_text_encoder_settings(tmp_path, capsys):
    """A converted text model samples exactly as its source, with no --text-encoder flag: the encoder spec
    (MiniLM, 16 tokens for the built-in text-to-video model, not the default 32) travels with it."""
    from skipdit.assets import builtin_model_path
    from skipdit.cli import main
    from skipdit.convert.checkpoint import TEXT_KEY, stored_text_encoder
    from skipdit.convert.files import read_safetensors_metadata
    from skipdit.io import read_video

    source = "moving-digits/Latte-T2V-skip"
    out = tmp_path / "t2v.safetensors"
    assert main(["convert", source, str(out)]) == 0
    before = read_safetensors_metadata(builtin_model_path(source))
    after = read_safetensors_metadata(out)
    assert after == before and stored_text_encoder(out) == {"name": "minilm", "max_length": 16}
    videos = []
    for ckpt in (source, out):
        folder = tmp_path / ("converted" if ckpt == out else "builtin")
        assert main(["sample", "--task", "t2v", "--ckpt", str(ckpt), "--prompt", "a 3 moves left", "--seeds", "0",
                     "--sampler", "ddim", "--steps", "2", "--format", "gif", "--out", str(folder),
                     "--no-progress"]) == 0
        videos.append(read_video(folder / "000000-a-3-moves-left.gif"))
    capsys.readouterr()
    assert torch.equal(videos[0], videos[1])
    # a `skipdit train` checkpoint states its encoder in its config: that is kept too
    model = skipdit.load(source)
    payload = {"model": model.state_dict(), "ema": model.state_dict(), "arch": "latte_t2v",
               "model_config": dataclasses.asdict(model.config),
               "config": {"text_encoder": "minilm", "text_max_length": 16}}
    torch.save(payload, tmp_path / "ckpt-0003000.pt")
    assert main(["convert", str(tmp_path / "ckpt-0003000.pt"), str(tmp_path / "from-run.safetensors")]) == 0
    spec = read_safetensors_metadata(tmp_path / "from-run.safetensors")[TEXT_KEY]
    assert json.loads(spec) == {"name": "minilm", "max_length": 16}


def test_convert_checks_the_output_before_reading(tmp_path, skip_model, monkeypatch):
    from skipdit.convert import checkpoint, convert

    src = save(skip_model, tmp_path / "m.safetensors")
    before = src.read_bytes()
    with pytest.raises(UserError, match="is the checkpoint being converted"):
        convert(src, tmp_path / "." / "m.safetensors")
    assert src.read_bytes() == before
    monkeypatch.setattr(checkpoint, "load", lambda *a, **k: pytest.fail("the input was read first"))
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(UserError, match="is a folder"):
        convert(src, tmp_path / "dir.safetensors")
    with pytest.raises(UserError, match="is a file, not a folder"):
        convert(src, src / "x.safetensors")
    monkeypatch.undo()
    path, model, report = convert(src, tmp_path / "new" / "copy.safetensors")
    assert report.ok and not report.ignored and torch.equal(model(X, T, Y), skip_model(X, T, Y))
    assert read_checkpoint(path)[1] == read_checkpoint(src)[1]
