"""FVD by the StyleGAN-V protocol with a tiny random-weight stand-in for the I3D TorchScript file; clip selection,
the video-set readers, saved statistics, and per-frame FID."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from skipdit.errors import UserError
from skipdit.io import save_video
from skipdit.metrics.fid import frechet_distance
from skipdit.metrics.fvd import (
    FAKE_CLIPS,
    ClipSpec,
    VideoSet,
    clip_features,
    clip_indices,
    frame_features,
    frame_fid,
    fvd,
    iter_clips,
    load_detector,
    load_stats,
    mean_cov,
    no_tf32,
    save_stats,
    select_videos,
    video_stats,
)

CLIPS = ClipSpec(clip_length=4)  # tiny videos: 4-frame clips


class TinyI3D(nn.Module):
    """I3D-shaped: 3D convolutions, a global pool and 400 logits, with the official TorchScript's forward
    signature; it resizes to 16x16 where the real one resizes to 224x224."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv3d(3, 8, 3, stride=(1, 2, 2), padding=1)
        self.conv2 = nn.Conv3d(8, 16, 3, stride=2, padding=1)
        self.logits = nn.Conv3d(16, 400, 1)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        x = x.float()
        if rescale:
            x = x / 255 * 2 - 1
        if resize:
            x = F.interpolate(x, size=(x.shape[2], 16, 16), mode="trilinear", align_corners=False)
        x = self.logits(F.relu(self.conv2(F.relu(self.conv1(x))))).mean((2, 3, 4))  # (N, 400)
        return x if return_features else x.softmax(-1)


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """The 400x400 eigendecompositions take milliseconds on one BLAS thread, but seconds when OpenBLAS threads
    contend for a busy 2-core CPU."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a scikit-learn dependency; without it the tests are only slower
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def detector_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt"
    torch.jit.script(TinyI3D().eval()).save(str(path))
    return path


@pytest.fixture(scope="module")
def detector(detector_path):
    return load_detector(detector_path)


def videos(n=12, frames=6, size=8, channels=3, seed=0, levels=256):
    """uint8 (N, F, H, W, C); ``levels`` < 256 draws from a few grey levels (an exact gif palette)."""
    rng = np.random.default_rng(seed)
    v = rng.integers(0, levels, (n, frames, size, size, channels))
    return (v * (255 // max(1, levels - 1)) if levels < 256 else v).astype(np.uint8)


def write_npz(path, arr):
    np.savez(path, arr_0=arr)
    return path


# -- detector and FVD ---------------------------------------------------------------------------------------------
def test_missing_detector_names_the_file(tmp_path):
    with pytest.raises(UserError, match="nowhere.pt"):
        load_detector(tmp_path / "nowhere.pt")


def test_detector_gets_uint8_ncthw_and_returns_400_features(detector):
    clips = torch.from_numpy(videos(n=3, frames=4))  # (N, T, H, W, C)
    out = detector(clips)
    assert out.shape == (3, 400) and out.dtype == torch.float32
    x = clips.permute(0, 4, 1, 2, 3).float() / 255 * 2 - 1  # what the official call does inside
    ref = TinyI3D()
    ref.load_state_dict(detector.module.state_dict())
    assert torch.allclose(out, ref(x, False, True, True), atol=1e-5)


def test_fvd_of_a_set_with_itself_is_zero_and_grows_with_a_shift(tmp_path, detector):
    real = videos()
    stats = video_stats(write_npz(tmp_path / "real.npz", real), detector, CLIPS)  # a VideoStats is taken as it is
    scores = []
    for shift in (0, 30, 90):
        fake = write_npz(tmp_path / f"fake{shift}.npz", np.clip(real.astype(int) + shift, 0, 255).astype(np.uint8))
        scores.append(fvd(stats, fake, detector, real_clips=CLIPS, fake_clips=CLIPS))
    assert abs(scores[0]) < 1e-6 * np.trace(stats.sigma)
    assert 0 < scores[1] < scores[2]


def test_frechet_part_matches_the_closed_form_and_stylegan_v(detector):
    rng = np.random.default_rng(0)
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    a = mu1 + rng.standard_normal((200_000, 3)) * np.sqrt(s1)
    b = mu2 + rng.standard_normal((200_000, 3)) * np.sqrt(s2)
    closed = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()  # diagonal Gaussians
    assert frechet_distance(*mean_cov(a), *mean_cov(b)) == pytest.approx(closed, rel=0.02)
    # on I3D features: StyleGAN-V's own formula (biased covariance, scipy sqrtm)
    fa = detector(torch.from_numpy(videos(n=24, frames=4, seed=1))).numpy()
    fb = detector(torch.from_numpy(videos(n=24, frames=4, seed=2) // 2)).numpy()
    stats = []
    for f in (fa, fb):
        f64 = f.astype(np.float64)
        mean = f64.mean(0)
        stats.append((mean, f64.T @ f64 / len(f) - np.outer(mean, mean)))
    (m1, c1), (m2, c2) = stats
    ref = np.square(m2 - m1).sum() + np.trace(c1 + c2 - 2 * np.real(scipy.linalg.sqrtm(c2 @ c1)))
    assert frechet_distance(*mean_cov(fa), *mean_cov(fb)) == pytest.approx(ref, rel=1e-6)


# -- clip selection -----------------------------------------------------------------------------------------------
def test_clip_indices_by_hand():
    assert clip_indices(6, ClipSpec(clip_length=4)).tolist() == [0, 1, 2, 3]
    assert clip_indices(13, ClipSpec(clip_length=4, subsample=3)).tolist() == [0, 3, 6, 9]
    # random offsets are uniform in [0, F - L*s + s - 1] (StyleGAN-V): the last frame is always in the video
    for frames, spec, starts in [(6, ClipSpec(clip_length=4, random_offset=True), {0, 1, 2}),
                                 (13, ClipSpec(clip_length=4, subsample=3, random_offset=True), {0, 1, 2, 3}),
                                 (12, ClipSpec(clip_length=4, subsample=3, random_offset=True), {0, 1, 2})]:
        seen = set()
        for seed in range(60):
            idx = clip_indices(frames, replace(spec, seed=seed), index=7)
            assert (np.diff(idx) == spec.subsample).all() and idx[-1] < frames
            seen.add(int(idx[0]))
        assert seen == starts


def test_clip_offsets_are_reproducible_per_seed_and_video():
    spec = ClipSpec(clip_length=16, subsample=3, random_offset=True, seed=5)
    a = [clip_indices(100, spec, index=i)[0] for i in range(20)]
    assert a == [clip_indices(100, spec, index=i)[0] for i in range(20)]
    assert len(set(a)) > 1  # different videos, different offsets
    assert a != [clip_indices(100, replace(spec, seed=6), index=i)[0] for i in range(20)]


def test_video_selection_is_a_seeded_subset():
    assert select_videos(5, 8) == [0, 1, 2, 3, 4]
    chosen = select_videos(100, 10, seed=3)
    assert len(set(chosen)) == 10 and chosen == sorted(chosen) and chosen == select_videos(100, 10, seed=3)
    assert chosen != select_videos(100, 10, seed=4)


def test_too_short_video_says_how_many_frames_are_needed(tmp_path, detector):
    write_npz(tmp_path / "v.npz", videos(n=3, frames=11))
    with pytest.raises(ValueError, match=r"11 frames.*at least 12"):
        clip_features(tmp_path / "v.npz", detector, ClipSpec(clip_length=4, subsample=3))
    with pytest.raises(ValueError, match="at least 48"):
        clip_indices(47, ClipSpec(subsample=3))


def test_bad_clip_specs_fail():
    for bad in (dict(clip_length=0), dict(subsample=1.5), dict(max_videos=1), dict(seed=-1)):
        with pytest.raises(ValueError):
            ClipSpec(**bad)


# -- readers ------------------------------------------------------------------------------------------------------
def test_npz_npy_gif_and_frame_folders_give_the_same_clips(tmp_path):
    from PIL import Image

    arr = videos(n=4, frames=7, channels=1, levels=8)  # few grey levels: gif and png are exact
    write_npz(tmp_path / "s.npz", arr)
    for k, video in enumerate(arr):
        (tmp_path / "npy").mkdir(exist_ok=True)
        np.save(tmp_path / "npy" / f"{k:06d}.npy", video)
        save_video(torch.from_numpy(video), tmp_path / "gif" / f"{k:06d}.gif", scale=1)
        (tmp_path / "frames" / f"v{k}").mkdir(parents=True)
        for t, frame in enumerate(video):
            Image.fromarray(frame[..., 0]).save(tmp_path / "frames" / f"v{k}" / f"{t:03d}.png")
    spec = ClipSpec(clip_length=3, subsample=2, random_offset=True, max_videos=3, seed=1)
    ref = list(iter_clips(tmp_path / "s.npz", spec))
    assert len(ref) == 3 and ref[0].shape == (3, 8, 8, 3)
    for source in ("npy", "gif", "frames"):
        assert len(VideoSet(tmp_path / source)) == 4
        clips = list(iter_clips(tmp_path / source, spec))
        assert all(np.array_equal(a, b) for a, b in zip(ref, clips)) and len(clips) == 3, source
    # the npz is streamed: any subset in any order reads the right videos
    assert [i for i, _ in VideoSet(tmp_path / "s.npz").read([3, 1])] == [1, 3]
    assert all(np.array_equal(v, arr[i]) for i, v in VideoSet(tmp_path / "s.npz").read([3, 1]))


def test_mp4_folder_reads_close_to_the_frames(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    arr = np.repeat(np.linspace(40, 200, 6).astype(np.uint8)[:, None, None, None], 16, 1).repeat(16, 2)  # flat greys
    save_video(torch.from_numpy(arr), tmp_path / "mp4" / "a.mp4", scale=1)
    save_video(torch.from_numpy(arr), tmp_path / "mp4" / "a.gif", scale=1)  # both kinds: the lossless gif is used
    assert VideoSet(tmp_path / "mp4").kind == ".gif"
    (tmp_path / "mp4" / "a.gif").unlink()
    (clip,) = iter_clips(tmp_path / "mp4", ClipSpec(clip_length=6))
    assert clip.shape == (6, 16, 16, 3) and np.abs(clip.astype(int) - arr.astype(int)).max() <= 3


def test_bad_sources_fail_clearly(tmp_path):
    with pytest.raises(UserError):
        VideoSet(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no videos"):
        VideoSet(tmp_path / "empty")
    np.savez(tmp_path / "images.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(N, F, H, W, C\)"):
        VideoSet(tmp_path / "images.npz")


# -- statistics -----------------------------------------------------------------------------------------------------
def test_saved_stats_round_trip_and_give_the_same_fvd(tmp_path, detector):
    real, fake = write_npz(tmp_path / "r.npz", videos(seed=1)), write_npz(tmp_path / "f.npz", videos(seed=2))
    spec = ClipSpec(clip_length=4, random_offset=True)
    stats = video_stats(real, detector, spec)
    assert stats.count == 12 and stats.mu.shape == (400,) and stats.protocol["detector"] == "i3d_torchscript.pt"
    path = save_stats(stats, tmp_path / "real-stats.npz")
    back = load_stats(path)
    assert np.array_equal(back.mu, stats.mu) and np.array_equal(back.sigma, stats.sigma)
    assert back.protocol == stats.protocol and back.count == 12
    direct = fvd(real, fake, detector, real_clips=spec, fake_clips=CLIPS)
    assert fvd(path, fake, detector, real_clips=spec, fake_clips=CLIPS) == pytest.approx(direct, rel=1e-9)


def test_stats_of_another_protocol_are_refused(tmp_path, detector, detector_path):
    real, fake = write_npz(tmp_path / "r.npz", videos(seed=1)), write_npz(tmp_path / "f.npz", videos(seed=2))
    path = save_stats(video_stats(real, detector, ClipSpec(clip_length=4)), tmp_path / "s.npz")
    with pytest.raises(ValueError, match=r"subsample=1.*subsample=3"):
        fvd(path, fake, detector, real_clips=ClipSpec(clip_length=4, subsample=3), fake_clips=CLIPS)
    other = shutil.copy(detector_path, tmp_path / "other_i3d.pt")
    with pytest.raises(ValueError, match="detector='i3d_torchscript.pt'.*detector='other_i3d.pt'"):
        fvd(path, fake, other, real_clips=ClipSpec(clip_length=4), fake_clips=CLIPS)
    with pytest.raises(ValueError, match="same length"):
        fvd(path, fake, detector, real_clips=ClipSpec(clip_length=4), fake_clips=FAKE_CLIPS)


# -- per-frame FID --------------------------------------------------------------------------------------------------
def channel_stats(frames: torch.Tensor) -> torch.Tensor:
    """A simple image feature: per-channel mean and std, (N, 6)."""
    x = frames.float().flatten(1, 2)  # (N, H*W, 3)
    return torch.cat([x.mean(1), x.std(1)], 1)


def test_frame_fid_with_a_simple_feature_function(tmp_path):
    a = videos(n=6, frames=5, channels=1, seed=1)
    write_npz(tmp_path / "a.npz", a)
    write_npz(tmp_path / "b.npz", a // 2)
    feats = frame_features(tmp_path / "a.npz", channel_stats, batch_size=7)  # batches cross video boundaries
    assert feats.shape == (30, 6)
    frames = torch.from_numpy(a.reshape(30, 8, 8, 1)).expand(-1, -1, -1, 3)
    assert np.allclose(feats, channel_stats(frames).numpy())
    assert abs(frame_fid(tmp_path / "a.npz", tmp_path / "a.npz", channel_stats)) < 1e-6 * np.trace(mean_cov(feats)[1])
    expected = frechet_distance(*mean_cov(feats), *mean_cov(channel_stats(frames // 2)))
    assert frame_fid(tmp_path / "a.npz", tmp_path / "b.npz", channel_stats) == pytest.approx(expected, rel=1e-6)


def test_tf32_is_off_inside_and_restored_after():
    seen = []
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    with no_tf32():
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
    assert seen == [(False, False)] and torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = before


# -- the command -------------------------------------------------------------------------------------------------
def test_eval_fvd_command(tmp_path, detector, detector_path, capsys):
    from skipdit.cli import main

    real = write_npz(tmp_path / "real.npz", videos(n=10, frames=8, size=16, seed=1))
    fake = write_npz(tmp_path / "fake.npz", videos(n=10, frames=8, size=16, seed=2))
    protocol = ["--detector", str(detector_path), "--clip-length", "4", "--real-subsample", "2", "--no-progress"]
    stats = tmp_path / "real-stats.npz"
    assert main(["eval", "fvd", str(fake), str(real), *protocol, "--save-ref-stats", str(stats), "--json",
                 "--frame-fid", "digits"]) == 0
    first = json.loads(capsys.readouterr().out)
    real_clips, fake_clips = ClipSpec(4, 2, random_offset=True, max_videos=2048), ClipSpec(4, 1, max_videos=2048)
    assert first["fvd"] == pytest.approx(fvd(real, fake, detector, real_clips=real_clips, fake_clips=fake_clips))
    assert (first["samples"], first["reference"]) == (10, 10) and first["frame_fid"] > 0
    assert main(["eval", "fvd", str(fake), str(stats), *protocol, "--json"]) == 0  # the saved statistics
    assert json.loads(capsys.readouterr().out)["fvd"] == pytest.approx(first["fvd"])

    assert main(["eval", "fvd", str(fake), str(stats), *protocol[:-3], "--real-subsample", "1", "--no-progress"]) == 2
    assert main(["eval", "fvd", str(fake), str(real), "--detector", str(tmp_path / "none.pt")]) == 2
    assert main(["eval", "fvd", str(fake), str(real), *protocol[:2], "--no-progress"]) == 2  # 8 frames < 16
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("skipdit: error:") for line in err)
