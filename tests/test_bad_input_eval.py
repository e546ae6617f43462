"""Bad input to ``eval``, ``extract-latents`` and ``sample-many``: one stderr line naming the problem, exit 2,
inputs untouched, no partial output (:mod:`tests.badinput`)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from skipdit.cli import main
from skipdit.io import save_video

from .badinput import expect_user_error
from .test_metrics_fvd import TinyI3D

DIGITS = ["--features", "digits", "--no-progress"]


def _images(n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 1), dtype=np.uint8)


def _png(path, seed=0):
    Image.fromarray(_images(1, seed)[0, ..., 0]).save(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A good images .npz and image folder, a tiny I3D TorchScript, a good video folder and damaged files."""
    d = tmp_path_factory.mktemp("bad-eval")
    np.savez(d / "good.npz", arr_0=_images())
    good = (d / "good.npz").read_bytes()
    (d / "empty.npz").write_bytes(b"")
    (d / "truncated.npz").write_bytes(good[: len(good) // 2])
    np.save(d / "array.npy", _images())
    (d / "array.npy").rename(d / "npy-named.npz")
    np.savez(d / "float01.npz", arr_0=_images().astype(np.float32) / 255)  # in [0, 1]: would score near-black
    np.savez(d / "rgba.npz", arr_0=np.zeros((4, 16, 16, 4), np.uint8))
    np.savez(d / "video.npz", arr_0=np.zeros((4, 3, 16, 16, 1), np.uint8))
    np.savez(d / "zero.npz", arr_0=np.zeros((0, 16, 16, 1), np.uint8))
    np.savez(d / "other-key.npz", images=_images())
    np.savez(d / "mu-only.npz", mu=np.zeros(4))
    (d / "notes.txt").write_text("not images")
    (d / "folder").mkdir()
    for k in range(4):
        _png(d / "folder" / f"{k}.png", k)
    for name in ("empty-folder", "temp-only", "corrupt", "truncated-png", "sizes"):
        (d / name).mkdir()
    _png(d / "temp-only" / ".000001-1.tmp-7-deadbeef.png")
    _png(d / "corrupt" / "0.png")
    (d / "corrupt" / "1.png").write_bytes(b"\x89PNG not really")
    png = (d / "folder" / "0.png").read_bytes()
    _png(d / "truncated-png" / "0.png")
    (d / "truncated-png" / "1.png").write_bytes(png[: len(png) // 2])
    _png(d / "sizes" / "0.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "sizes" / "1.png")
    (d / "junk.pt").write_bytes(b"\x00junk weights" * 10)
    torch.jit.script(TinyI3D().eval()).save(str(d / "i3d.pt"))
    i3d = (d / "i3d.pt").read_bytes()
    (d / "i3d-truncated.pt").write_bytes(i3d[: len(i3d) // 2])
    # video sets: a good one, and folders with one damaged member each
    videos = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (3, 6, 8, 8, 3), dtype=np.uint8))
    for name in ("videos", "mp4-truncated", "mp4-foreign", "gif-corrupt", "npy-corrupt", "frames-corrupt"):
        (d / name).mkdir()
    for k, v in enumerate(videos):
        save_video(v, d / "videos" / f"{k}.mp4", scale=1)
        save_video(v, d / "mp4-truncated" / f"{k}.mp4", scale=1)
        save_video(v, d / "mp4-foreign" / f"{k}.mp4", scale=1)
        save_video(v, d / "gif-corrupt" / f"{k}.gif", scale=1)
        np.save(d / "npy-corrupt" / f"{k}.npy", v.numpy())
        (d / "frames-corrupt" / f"v{k}").mkdir()
        for f, frame in enumerate(v):
            Image.fromarray(frame.numpy()).save(d / "frames-corrupt" / f"v{k}" / f"{f:02d}.png")
    mp4 = (d / "mp4-truncated" / "1.mp4").read_bytes()
    (d / "mp4-truncated" / "1.mp4").write_bytes(mp4[: len(mp4) // 3])
    (d / "mp4-foreign" / "1.mp4").write_text("a text file named like a video")
    (d / "gif-corrupt" / "2.gif").write_bytes(b"GIF89a broken")
    npy = (d / "npy-corrupt" / "0.npy").read_bytes()
    (d / "npy-corrupt" / "0.npy").write_bytes(npy[:100])
    (d / "frames-corrupt" / "v1" / "03.png").write_bytes(b"nope")
    np.savez(d / "float-videos.npz", arr_0=np.zeros((3, 6, 8, 8, 3), np.float32))
    return d


IMAGE_SAMPLES = [  # eval is SAMPLES: what is wrong with SAMPLES, and what the message must say
    ("empty.npz", r"empty\.npz is not a valid \.npz"),
    ("truncated.npz", r"truncated\.npz is not a valid \.npz"),
    ("npy-named.npz", r"not a valid \.npz"),
    ("float01.npz", r"must hold uint8 images .* got float32.*convert floats"),
    ("rgba.npz", r"C in \(1, 3\), got uint8 \(4, 16, 16, 4\)"),
    ("video.npz", r"videos need FVD"),
    ("zero.npz", r"N >= 1"),
    ("other-key.npz", r"has no arr_0 array \(it holds images\)"),
    ("notes.txt", r"neither a folder of images nor an \.npz"),
    ("missing.npz", r"missing\.npz not found"),
    ("empty-folder", r"empty-folder holds no images"),
    ("temp-only", r"temp-only holds no images"),  # a killed run's temporary PNG is no sample
    ("corrupt", r"1\.png is not an image PIL can read"),
    ("truncated-png", r"1\.png is a damaged image"),
    ("sizes", r"all images must share one size"),
]


@pytest.mark.parametrize("samples, message", IMAGE_SAMPLES, ids=[c[0] for c in IMAGE_SAMPLES])
def test_eval_is_bad_samples(files, capsys, samples, message):
    path = files / samples
    expect_user_error(capsys, ["eval", "is", path, "--splits", "1", *DIGITS], message,
                      inputs=[path] if path.is_file() else list(path.glob("*")), outputs=[files])


REFERENCES = [  # eval fid good.npz REF --save-ref-stats: the reference's problems, and no stats file written
    ("empty.npz", r"empty\.npz is not a valid \.npz"),
    ("truncated.npz", r"truncated\.npz is not a valid \.npz"),
    ("float01.npz", r"must hold uint8 images"),
    ("mu-only.npz", r"has mu but no sigma"),
    ("corrupt", r"1\.png is not an image PIL can read"),
]


@pytest.mark.parametrize("reference, message", REFERENCES, ids=[c[0] for c in REFERENCES])
def test_eval_fid_bad_reference(files, capsys, reference, message):
    path = files / reference
    expect_user_error(capsys, ["eval", "fid", files / "good.npz", path, *DIGITS, "--save-ref-stats",
                               files / "stats-out.npz"], message,
                      inputs=[files / "good.npz", path], outputs=[files])


@pytest.mark.parametrize("spec, message", [
    ("inception-ts:{d}/junk.pt", r"junk\.pt is not a TorchScript file"),
    ("inception:{d}/junk.pt", r"junk\.pt is not a PyTorch checkpoint"),
    ("inception-ts:{d}/i3d-truncated.pt", r"i3d-truncated\.pt is not a TorchScript file"),
])
def test_eval_corrupt_feature_net(files, capsys, spec, message):
    expect_user_error(capsys, ["eval", "is", files / "good.npz", "--features", spec.format(d=files),
                               "--no-progress"], message, inputs=[files / "junk.pt"], outputs=[files])


FVD = [  # eval fvd SAMPLES videos/ --detector DETECTOR
    ("videos", "junk.pt", r"junk\.pt is not a TorchScript I3D detector"),
    ("videos", "i3d-truncated.pt", r"i3d-truncated\.pt is not a TorchScript I3D detector"),
    ("mp4-truncated", "i3d.pt", r"1\.mp4 is not a video ffmpeg can read"),
    ("mp4-foreign", "i3d.pt", r"1\.mp4 is not a video ffmpeg can read"),
    ("gif-corrupt", "i3d.pt", r"2\.gif is not a gif PIL can read"),
    ("npy-corrupt", "i3d.pt", r"0\.npy is not a readable \.npy video"),
    ("frames-corrupt", "i3d.pt", r"03\.png is not an image PIL can read"),
    ("empty.npz", "i3d.pt", r"empty\.npz is not a valid \.npz"),
    ("truncated.npz", "i3d.pt", r"truncated\.npz is not a valid \.npz"),
    ("float-videos.npz", "i3d.pt", r"must be uint8 videos .* got float32"),
]


@pytest.mark.parametrize("samples, detector, message", FVD, ids=[f"{c[0]}-{c[1]}" for c in FVD])
def test_eval_fvd_bad_input(files, capsys, samples, detector, message):
    pytest.importorskip("imageio_ffmpeg")
    expect_user_error(capsys, ["eval", "fvd", files / samples, files / "videos", "--detector", files / detector,
                               "--clip-length", "4", "--real-subsample", "1", "--no-progress",
                               "--save-ref-stats", files / "fvd-stats-out.npz"], message,
                      inputs=[files / detector, files / samples], outputs=[files])


# -- sample-many ------------------------------------------------------------------------------------------------
SAMPLE_MANY = ["sample-many", "--seeds", "0-3", "--sampler", "ddim", "--steps", "2", "--batch-size", "2",
               "--no-progress"]


def test_sample_many_refuses_absurd_seed_counts_before_allocating(tmp_path, capsys):
    expect_user_error(capsys, [*SAMPLE_MANY, "--seeds", "0-999999999", "--out", tmp_path / "out"],
                      r"names 1,000,000,000 seeds; at most 1,000,000 are allowed", outputs=[tmp_path])


@pytest.fixture
def done(tmp_path):
    out = tmp_path / "out"
    assert main([*SAMPLE_MANY, "--out", str(out)]) == 0
    return out


def test_sample_many_refuses_other_settings(done, capsys):
    expect_user_error(capsys, [*SAMPLE_MANY, "--cfg-scale", "2", "--out", done],
                      r"holds samples made with other settings: cfg_scale 4\.0 -> 2\.0; use --overwrite",
                      inputs=list(done.rglob("*")), outputs=[done])


def test_sample_many_refuses_a_damaged_settings_record(done, capsys):
    (done / "settings.json").write_text("{not json")
    expect_user_error(capsys, [*SAMPLE_MANY, "--out", done], r"settings\.json is damaged",
                      inputs=list(done.rglob("*")), outputs=[done])


def test_sample_many_refuses_samples_without_a_record(done, capsys):
    (done / "settings.json").unlink()
    expect_user_error(capsys, [*SAMPLE_MANY, "--out", done], r"holds samples but no settings\.json",
                      inputs=list(done.rglob("*")), outputs=[done])


def test_sample_many_settings_record_is_plain_json(done):
    settings = json.loads((done / "settings.json").read_text())
    assert settings["fingerprint_version"] == 1 and settings["labels"] == {"0": 0, "1": 1, "2": 2, "3": 3}


# -- extract-latents --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage, message", [
    (b"broken", r"9\.png is not an image PIL can read"),
    (None, r"9\.png is a damaged image"),  # a truncated PNG: the header reads, the pixels do not
])
def test_extract_latents_names_a_corrupt_image(tmp_path, capsys, damage, message):
    from diffusers.utils import logging as diffusers_logging

    from .test_sampling import tiny_vae_folder

    # diffusers warns on stderr that `accelerate` is not installed when the VAE loads: not this test's line
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        _extract_latents_case(tmp_path, capsys, tiny_vae_folder(tmp_path / "vae"), damage, message)
    finally:
        diffusers_logging.set_verbosity(level)


def _extract_latents_case(tmp_path, capsys, vae, damage, message):
    for c in ("a", "b"):
        (tmp_path / "img" / c).mkdir(parents=True)
        for k in range(2):
            _png(tmp_path / "img" / c / f"{k}.png", k)
    (tmp_path / "img" / "a" / ".3.tmp-1-00000000.png").write_bytes(b"half-written")  # never read: sorts first
    png = (tmp_path / "img" / "a" / "0.png").read_bytes()
    (tmp_path / "img" / "b" / "9.png").write_bytes(damage if damage is not None else png[: len(png) // 2])
    expect_user_error(capsys, ["extract-latents", tmp_path / "img", "--vae", vae, "--image-size", "16",
                               "--out", tmp_path / "lat", "--no-progress"], message,
                      inputs=list((tmp_path / "img").rglob("*.png")), outputs=[tmp_path])


@pytest.mark.parametrize("metric", ["fid", "prdc"])
@pytest.mark.parametrize("samples", ["empty.npz", "truncated.npz", "notes.txt", "empty-folder"])
def test_eval_refuses_bad_samples_before_the_reference_pass(files, capsys, metric, samples):
    """With progress bars on, a reference pass before the check would print its bar first: one line means the
    bad samples were refused before any feature was computed. (A damaged image inside a folder is found when
    it is read, which is after the reference pass: the folder is not read twice.)"""
    expect_user_error(capsys, ["eval", metric, files / samples, "digits-real", "--features", "digits"],
                      r"not a valid \.npz|neither a folder of images|holds no images", outputs=[files])
