"""Video files: gif / mp4 round trips, the default upscale, uint8 conversion, animated grids."""

import re
import sys

import pytest
import torch

from skipdit.errors import UserError
from skipdit.io import (
    VIDEO_FORMATS,
    default_video_scale,
    read_video,
    save_video,
    save_video_grid,
    save_videos,
    to_uint8,
    video_to_uint8,
)


def grey_video(frames=6, size=16, seed=0):
    """Random grey levels, with frames 2 and 3 equal: a writer that merges repeated frames would drop one."""
    video = torch.randint(0, 256, (frames, size, size, 1), generator=torch.Generator().manual_seed(seed),
                          dtype=torch.uint8)
    if frames >= 4:
        video[3] = video[2]
    return video


def test_gif_round_trip_is_exact_and_keeps_every_frame(tmp_path):
    video = grey_video()
    path = save_video(video, tmp_path / "a.gif", fps=8)
    back = read_video(path)
    assert back.shape == (6, 128, 128, 3)  # 16 x 8 (default scale), grey -> RGB
    assert torch.equal(back[:, ::8, ::8], video.expand(-1, -1, -1, 3))
    assert torch.equal(back, video.repeat_interleave(8, 1).repeat_interleave(8, 2).expand(-1, -1, -1, 3))
    assert not list(tmp_path.glob(".*"))  # the temporary file was renamed


def test_gif_of_few_colours_is_exact(tmp_path):
    video = torch.randint(0, 4, (3, 8, 10, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8) * 80
    back = read_video(save_video(video, tmp_path / "c.gif", scale=1))
    assert torch.equal(back, video)


def test_mp4_round_trip_is_near_lossless(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    video = grey_video()
    back = read_video(save_video(video, tmp_path / "a.mp4", fps=8))
    assert back.shape == (6, 128, 128, 3)
    # Measured: max abs difference 2 grey levels (H.264 at crf 4 plus the limited-range YUV conversion).
    assert (back[:, ::8, ::8].int() - video.int()).abs().max() <= 3


def test_mp4_pads_odd_sides_to_even(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    video = torch.full((2, 5, 7, 3), 200, dtype=torch.uint8)
    back = read_video(save_video(video, tmp_path / "odd.mp4", scale=1))
    assert back.shape == (2, 6, 8, 3)
    assert (back.int() - 200).abs().max() <= 2


def test_default_scale_reaches_128_pixels():
    assert default_video_scale(16, 16) == 8
    assert default_video_scale(8, 8) == 16
    assert default_video_scale(16, 40) == 8  # the short side decides
    assert default_video_scale(100, 100) == 2
    assert default_video_scale(128, 300) == 1
    assert default_video_scale(500, 500) == 1


def test_explicit_scale(tmp_path):
    back = read_video(save_video(grey_video(frames=2), tmp_path / "s.gif", scale=3))
    assert back.shape == (2, 48, 48, 3)


def test_bad_suffix_and_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="mp4"):
        save_video(grey_video(), tmp_path / "a.avi")
    with pytest.raises(ValueError, match=re.escape(str(VIDEO_FORMATS))):
        read_video(tmp_path / "a.webm")
    with pytest.raises(ValueError, match="uint8"):
        save_video(torch.zeros(2, 4, 4, 3), tmp_path / "a.gif")
    with pytest.raises(ValueError, match="scale"):
        save_video(grey_video(), tmp_path / "a.gif", scale=0)


def test_missing_imageio_ffmpeg_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # makes the import fail
    with pytest.raises(UserError, match=re.escape("pip install 'skipdit[video]'")):
        save_video(grey_video(), tmp_path / "a.mp4")
    save_video(grey_video(), tmp_path / "a.gif")  # gif needs only Pillow


def test_video_to_uint8_matches_to_uint8_per_frame():
    videos = torch.randn(2, 3, 4, 5, 6, generator=torch.Generator().manual_seed(0)) * 0.7  # (N, C, F, H, W)
    out = video_to_uint8(videos)
    assert out.shape == (2, 4, 5, 6, 3) and out.dtype == torch.uint8
    for k in range(4):
        assert torch.equal(out[:, k], to_uint8(videos[:, :, k]))


def test_save_videos_writes_every_name_and_format(tmp_path):
    videos = torch.stack([grey_video(frames=2, seed=s) for s in range(2)])  # (2, F, H, W, 1)
    formats = ("gif", "mp4") if _has_ffmpeg() else ("gif",)
    paths = save_videos(videos, ["a", "b"], tmp_path / "out", formats=formats, scale=1)
    assert [p.name for p in paths] == [f"{n}.{f}" for n in "ab" for f in formats]
    assert all(p.is_file() for p in paths)
    with pytest.raises(ValueError, match="names"):
        save_videos(videos, ["a"], tmp_path)


@pytest.mark.parametrize("suffix", VIDEO_FORMATS)
def test_save_video_grid_has_one_frame_per_video_frame(tmp_path, suffix):
    if suffix == "mp4":
        pytest.importorskip("imageio_ffmpeg")
    videos = torch.stack([grey_video(frames=5, seed=s) for s in range(3)])  # (3, 5, 16, 16, 1)
    back = read_video(save_video_grid(videos, ["x", "y", "z"], tmp_path / f"grid.{suffix}", fps=4))
    assert back.shape[0] == 5
    assert back.shape[2] > 3 * 96  # three cells of at least 96 px side by side


def _has_ffmpeg() -> bool:
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True
