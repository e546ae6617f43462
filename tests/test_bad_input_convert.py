"""Bad input to ``skipdit convert`` and to the checkpoint / folder readers behind ``sample``: each case is one
stderr line naming the file and what it is not, exit 2, inputs unchanged and no partial output
(:func:`tests.badinput.expect_user_error`)."""

from __future__ import annotations

import collections
import json
import os
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from skipdit import save
from skipdit.cli import main
from skipdit.models import LatteT2V, LatteT2VConfig
from skipdit.models.random import randomize_

from .badinput import expect_user_error
from .conftest import tiny_model

LATTE_CONFIG = {
    "_class_name": "LatteTransformer3DModel", "num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 4,
    "out_channels": 8, "num_layers": 2, "cross_attention_dim": 32, "attention_bias": True, "sample_size": 8,
    "patch_size": 2, "activation_fn": "gelu-approximate", "norm_type": "ada_norm_single",
    "norm_elementwise_affine": False, "norm_eps": 1e-6, "caption_channels": 12, "video_length": 4}


@pytest.fixture
def good(tmp_path):
    """A valid official-layout DiT .pt and our safetensors of it, in their own folder."""
    folder = tmp_path / "in"
    folder.mkdir()
    model = tiny_model()
    torch.save({"model": model.state_dict(), "ema": model.state_dict()}, folder / "dit.pt")
    save(model, folder / "dit.safetensors")
    return folder


@pytest.fixture
def latte_folder(tmp_path):
    """A diffusers LatteTransformer3DModel folder (config.json + safetensors) of a tiny random model."""
    torch.manual_seed(0)
    config = LatteT2VConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2,
                            num_frames=4, caption_channels=12, long_skip=False)
    folder = tmp_path / "Latte"
    folder.mkdir()
    save_file(randomize_(LatteT2V(config)).state_dict(), folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps(LATTE_CONFIG))
    return folder


def _convert(capsys, src, out_dir, message, *, inputs=(), dst=None):
    """``skipdit convert src out_dir/out.safetensors`` must fail with ``message`` and write nothing."""
    out_dir.mkdir(exist_ok=True)
    dst = out_dir / "out.safetensors" if dst is None else dst
    return expect_user_error(capsys, ["convert", src, dst], message, inputs=[*inputs, src], outputs=[out_dir])


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


# -- unreadable checkpoints -------------------------------------------------------------------------------------
def test_text_file_as_checkpoint(tmp_path, capsys):
    bad = _write(tmp_path / "notes.pt", b"these are my notes, not weights\n")
    line = _convert(capsys, bad, tmp_path / "out", r"notes\.pt is a text file, not a PyTorch checkpoint")
    assert "weights_only" not in line


def test_zero_byte_checkpoint(tmp_path, capsys):
    _convert(capsys, _write(tmp_path / "empty.pt", b""), tmp_path / "out", r"empty\.pt is empty \(0 bytes\)")


def test_truncated_pt_zip(tmp_path, capsys, good):
    data = (good / "dit.pt").read_bytes()
    bad = _write(tmp_path / "cut.pt", data[: len(data) // 2])
    _convert(capsys, bad, tmp_path / "out", r"cut\.pt is a truncated or damaged PyTorch checkpoint")


def test_pt_zip_with_a_damaged_member(tmp_path, capsys, good):
    """The zip directory survives but the pickle inside is garbage."""
    data = bytearray((good / "dit.pt").read_bytes())
    start = data.index(b"data.pkl") + len(b"data.pkl")  # the pickle follows its local header
    data[start + 40:start + 200] = b"\x00" * 160
    bad = _write(tmp_path / "rot.pt", bytes(data))
    line = _convert(capsys, bad, tmp_path / "out", r"rot\.pt is a damaged PyTorch checkpoint")
    assert "weights_only" not in line


def test_pickle_that_safe_loading_refuses(tmp_path, capsys):
    bad = tmp_path / "objects.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "sched": collections.OrderedDict(a=slice(1))}, bad)
    line = _convert(capsys, bad, tmp_path / "out", r"objects\.pt holds Python objects other than tensors")
    assert "weights_only" not in line and "arbitrary code" not in line


def test_legacy_pickle_that_is_truncated(tmp_path, capsys, good):
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(4)}, legacy, _use_new_zipfile_serialization=False)
    data = legacy.read_bytes()
    bad = _write(tmp_path / "legacy-cut.pt", data[: len(data) // 3])
    _convert(capsys, bad, tmp_path / "out", r"legacy-cut\.pt is not a PyTorch checkpoint")


def test_garbage_bytes_as_pt(tmp_path, capsys):
    noise = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    bad = _write(tmp_path / "noise.pt", bytes(noise.tolist()))
    _convert(capsys, bad, tmp_path / "out", r"noise\.pt is not a PyTorch checkpoint")


def test_truncated_safetensors(tmp_path, capsys, good):
    data = (good / "dit.safetensors").read_bytes()
    bad = _write(tmp_path / "cut.safetensors", data[: len(data) - 1000])
    _convert(capsys, bad, tmp_path / "out", r"cut\.safetensors is not a valid safetensors file \(truncated")


def test_garbage_safetensors_header(tmp_path, capsys):
    bad = _write(tmp_path / "junk.safetensors", struct.pack("<Q", 40) + b"\x01\x02garbage, not json" * 3)
    _convert(capsys, bad, tmp_path / "out", r"junk\.safetensors is not a valid safetensors file")


def test_text_file_as_safetensors(tmp_path, capsys):
    bad = _write(tmp_path / "readme.safetensors", b"# not a model\n")
    _convert(capsys, bad, tmp_path / "out", r"readme\.safetensors is a text file, not a safetensors file")


def test_malformed_config_metadata(tmp_path, capsys, good):
    tensors = {k: v.contiguous() for k, v in tiny_model().state_dict().items()}
    bad = tmp_path / "meta.safetensors"
    save_file(tensors, bad, metadata={"skipdit_config": '{"depth": 4,', "skipdit_arch": "dit"})
    _convert(capsys, bad, tmp_path / "out", r"skipdit_config metadata of .*meta\.safetensors is not valid JSON")


def test_folder_that_is_not_a_checkpoint(tmp_path, capsys):
    folder = tmp_path / "weights"
    folder.mkdir()
    _convert(capsys, folder, tmp_path / "out", r"weights is a folder, not a checkpoint file")


def test_an_unknown_extra_key_stays_an_error(tmp_path, capsys):
    state = {**tiny_model().state_dict(), "caption_projection.y_embedding": torch.zeros(120, 12)}
    bad = tmp_path / "extra.pt"
    torch.save(state, bad)  # a DiT has no caption projection: not the ignorable Latte-T2V buffer
    _convert(capsys, bad, tmp_path / "out", r"unexpected 1 keys: caption_projection\.y_embedding")


# -- the output path ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink"])
def test_convert_refuses_to_overwrite_its_input(tmp_path, capsys, good, spelling):
    src = good / "dit.safetensors"
    dst = {"same": lambda: src, "dotted": lambda: good / ".." / "in" / "." / "dit.safetensors",
           "symlink": lambda: _link(os.symlink, src, tmp_path / "link.safetensors"),
           "hardlink": lambda: _link(os.link, src, tmp_path / "hard.safetensors")}[spelling]()
    expect_user_error(capsys, ["convert", src, dst], r"is the checkpoint being converted",
                      inputs=[src], outputs=[good])


def _link(make, src, dst):
    make(src, dst)
    return dst


def test_convert_refuses_to_write_into_the_diffusers_folder_it_reads(capsys, latte_folder):
    weights = latte_folder / "diffusion_pytorch_model.safetensors"
    expect_user_error(capsys, ["convert", latte_folder, weights], r"is inside the diffusers folder being converted",
                      inputs=[weights, latte_folder / "config.json"], outputs=[latte_folder])


def test_output_is_an_existing_folder(tmp_path, capsys, good):
    target = tmp_path / "out" / "model.safetensors"
    target.mkdir(parents=True)
    _convert(capsys, good / "dit.pt", tmp_path / "out", r"output .*model\.safetensors is a folder", dst=target)


def test_output_under_a_file(tmp_path, capsys, good):
    (tmp_path / "out").mkdir()
    blocker = _write(tmp_path / "out" / "file", b"x")
    _convert(capsys, good / "dit.pt", tmp_path / "out", r"out/file is a file, not a folder",
             dst=blocker / "sub" / "m.safetensors", inputs=[blocker])


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_output_in_an_unwritable_folder(tmp_path, capsys, good):
    locked = tmp_path / "out"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        _convert(capsys, good / "dit.pt", locked, r"the folder .*out is not writable")
    finally:
        locked.chmod(0o700)


def test_output_suffix_and_input_size(tmp_path, capsys, good):
    _convert(capsys, good / "dit.pt", tmp_path / "out", r"output must end in \.safetensors",
             dst=tmp_path / "out" / "m.pt")
    expect_user_error(capsys, ["convert", good / "dit.pt", tmp_path / "o.safetensors", "--input-size", "0"],
                      r"--input-size must be >= 1", inputs=[good / "dit.pt"], outputs=[tmp_path])


# -- diffusers folders -------------------------------------------------------------------------------------------
def test_diffusers_folder_with_malformed_config(tmp_path, capsys, latte_folder):
    (latte_folder / "config.json").write_text('{"_class_name": "LatteTransformer3DModel",,}')
    _convert(capsys, latte_folder, tmp_path / "out", r"Latte/config\.json is not valid JSON",
             inputs=[latte_folder / "config.json"])


def test_diffusers_folder_config_lacks_geometry(tmp_path, capsys, latte_folder):
    config = {k: v for k, v in LATTE_CONFIG.items() if k not in ("num_layers", "patch_size")}
    (latte_folder / "config.json").write_text(json.dumps(config))
    _convert(capsys, latte_folder, tmp_path / "out", r"config\.json lacks num_layers, patch_size")


def test_diffusers_folder_with_a_list_for_config(tmp_path, capsys, latte_folder):
    (latte_folder / "config.json").write_text("[1, 2]")
    _convert(capsys, latte_folder, tmp_path / "out", r"config\.json must hold a JSON object, found a list")


def test_diffusers_folder_with_bad_shard_index(tmp_path, capsys, latte_folder):
    weights = latte_folder / "diffusion_pytorch_model.safetensors"
    weights.rename(latte_folder / "diffusion_pytorch_model-00001-of-00002.safetensors")
    index = latte_folder / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "diffusion_pytorch_model-00001-of-00002.safetensors",
                                                "b": "diffusion_pytorch_model-00002-of-00002.safetensors"}}))
    _convert(capsys, latte_folder, tmp_path / "out", r"index\.json lists shards that are not in .*00002-of-00002")
    index.write_text('{"weight_map": ')
    _convert(capsys, latte_folder, tmp_path / "out", r"index\.json is not valid JSON")


def test_diffusers_folder_with_truncated_weights(tmp_path, capsys, latte_folder):
    weights = latte_folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])
    _convert(capsys, latte_folder, tmp_path / "out",
             r"diffusion_pytorch_model\.safetensors is not a valid safetensors file")


# -- sample --ckpt and its folders -------------------------------------------------------------------------------
def _sample(capsys, tmp_path, extra, message, inputs=()):
    out = tmp_path / "samples"
    argv = ["sample", *extra, "--seeds", "0", "--steps", "2", "--out", out, "--no-progress"]
    return expect_user_error(capsys, argv, message, inputs=inputs, outputs=[tmp_path])


def test_sample_with_unreadable_checkpoints(tmp_path, capsys, good):
    text = _write(tmp_path / "ckpt.pt", b"step=100 loss=0.1\n")
    line = _sample(capsys, tmp_path, ["--ckpt", text], r"ckpt\.pt is a text file, not a PyTorch checkpoint", [text])
    assert "weights_only" not in line
    data = (good / "dit.pt").read_bytes()
    cut = _write(tmp_path / "cut.pt", data[:-64])
    _sample(capsys, tmp_path, ["--ckpt", cut], r"cut\.pt is a truncated or damaged PyTorch checkpoint", [cut])
    data = (good / "dit.safetensors").read_bytes()
    cut = _write(tmp_path / "cut.safetensors", data[:-64])
    _sample(capsys, tmp_path, ["--ckpt", cut], r"cut\.safetensors is not a valid safetensors file", [cut])


def test_sample_text_encoder_with_malformed_config(tmp_path, capsys):
    encoder = tmp_path / "t5"
    encoder.mkdir()
    _write(encoder / "config.json", b'{"model_type": "t5"')
    _sample(capsys, tmp_path, ["--task", "t2v", "--text-encoder", encoder], r"t5/config\.json is not valid JSON",
            [encoder / "config.json"])


def test_sample_text_encoder_with_malformed_tokenizer_json(tmp_path, capsys):
    encoder = tmp_path / "t5"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"model_type": "t5"}))
    _write(encoder / "tokenizer_config.json", b'{"model_max_length": 120,')
    _sample(capsys, tmp_path, ["--task", "t2v", "--text-encoder", encoder],
            r"t5/tokenizer_config\.json is not valid JSON", [encoder / "tokenizer_config.json"])


def test_sample_text_encoder_pipeline_folder_with_malformed_tokenizer_json(tmp_path, capsys):
    pipeline = tmp_path / "Latte-1"
    (pipeline / "text_encoder").mkdir(parents=True)
    (pipeline / "tokenizer").mkdir()
    (pipeline / "text_encoder" / "config.json").write_text(json.dumps({"model_type": "t5"}))
    _write(pipeline / "tokenizer" / "tokenizer.json", b"\xff\xfe not utf-8")
    _sample(capsys, tmp_path, ["--task", "t2v", "--text-encoder", pipeline],
            r"tokenizer/tokenizer\.json is not a JSON file \(not UTF-8 text\)")


def test_sample_vae_with_malformed_config(tmp_path, capsys, good):
    pytest.importorskip("diffusers")
    vae = tmp_path / "vae"
    vae.mkdir()
    _write(vae / "config.json", b'{"_class_name": "AutoencoderKL", "latent_channels": 4')
    _sample(capsys, tmp_path, ["--ckpt", good / "dit.safetensors", "--vae", vae], r"vae/config\.json is not valid JSON")


def test_sample_hunyuan_folder_with_malformed_json(tmp_path, capsys):
    pipeline = tmp_path / "HunyuanDiT"
    (pipeline / "scheduler").mkdir(parents=True)
    (pipeline / "model_index.json").write_text(json.dumps({"_class_name": "HunyuanDiTPipeline"}))
    _write(pipeline / "scheduler" / "scheduler_config.json", b"{'single': 'quotes'}")
    _sample(capsys, tmp_path, ["--model-dir", pipeline], r"scheduler/scheduler_config\.json is not valid JSON")


def test_sample_vae_with_truncated_weights(tmp_path, capsys, good):
    pytest.importorskip("diffusers")
    vae = tmp_path / "vae"
    vae.mkdir()
    (vae / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", "latent_channels": 4}))
    weights = vae / "diffusion_pytorch_model.safetensors"
    save_file({"decoder.conv_in.weight": torch.zeros(8, 4, 3, 3)}, weights)
    weights.write_bytes(weights.read_bytes()[:-100])
    _sample(capsys, tmp_path, ["--ckpt", good / "dit.safetensors", "--vae", vae],
            r"vae/diffusion_pytorch_model\.safetensors is not a valid safetensors file \(truncated", [weights])


def test_sample_hunyuan_folder_with_truncated_weights(tmp_path, capsys):
    pipeline = tmp_path / "HunyuanDiT"
    (pipeline / "transformer").mkdir(parents=True)
    (pipeline / "model_index.json").write_text(json.dumps({"_class_name": "HunyuanDiTPipeline"}))
    weights = pipeline / "transformer" / "diffusion_pytorch_model.safetensors"
    _write(weights, struct.pack("<Q", 10 ** 6) + b"{}")
    _sample(capsys, tmp_path, ["--model-dir", pipeline],
            r"transformer/diffusion_pytorch_model\.safetensors is not a valid safetensors file", [weights])


@pytest.mark.parametrize("entry", [{"video_length": 0}, {"num_layers": "28"}, {"out_channels": 0}])
def test_diffusers_folder_config_with_bad_counts(tmp_path, capsys, latte_folder, entry):
    (latte_folder / "config.json").write_text(json.dumps({**LATTE_CONFIG, **entry}))
    key, value = next(iter(entry.items()))
    _convert(capsys, latte_folder, tmp_path / "out", rf"config\.json: {key}={value!r} must be a positive integer")


def test_sample_with_malformed_text_encoder_metadata(tmp_path, capsys):
    from skipdit.convert.checkpoint import ARCH_KEY, CONFIG_KEY, TEXT_KEY
    from skipdit.convert.files import read_safetensors_metadata

    builtin = tmp_path / "t2v.safetensors"
    assert main_ok(["convert", "moving-digits/Latte-T2V-skip", builtin])
    metadata = read_safetensors_metadata(builtin)
    tensors = load_file(builtin)
    for spec, message in ((r'{"name": "minilm", "max_length": "16"}', "must be a name and a positive max_length"),
                          ('{"name": ', "is not valid JSON")):
        bad = tmp_path / "bad.safetensors"
        save_file(tensors, bad, metadata={CONFIG_KEY: metadata[CONFIG_KEY], ARCH_KEY: metadata[ARCH_KEY],
                                          TEXT_KEY: spec})
        _sample(capsys, tmp_path, ["--ckpt", bad], rf"the {TEXT_KEY} metadata of .*bad\.safetensors {message}", [bad])


def main_ok(argv) -> bool:
    return main([str(a) for a in argv]) == 0
