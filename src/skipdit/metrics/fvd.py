"""Fréchet Video Distance by the StyleGAN-V protocol (``fvd2048_16f``), from a local I3D TorchScript file;
and per-frame FID of two video sets with any image feature function.

    stats = video_stats("ucf101-frames/", "i3d_torchscript.pt")        # real clips: REAL_CLIPS, once per data set
    save_stats(stats, "ucf101-fvd2048_16f.npz")
    fvd("ucf101-fvd2048_16f.npz", "samples/latte-skip/samples.npz", "i3d_torchscript.pt")

A video set is an ``.npz`` (``arr_0`` uint8 N F H W C, as ``skipdit sample-many`` packs it), a folder of ``.npy``
frame arrays (F, H, W, C) (its ``samples/`` folder), a folder of ``.gif`` / ``.mp4`` files, or a folder of frame
folders (one folder of images per video, the layout StyleGAN-V reads). Videos are taken in file-name order.

**The detector** is ``i3d_torchscript.pt``, the StyleGAN-V authors' TorchScript port of the tf.hub Kinetics-400
I3D (``deepmind/i3d-kinetics-400/1``) that the original FVD code uses. StyleGAN-V fetches it from
:data:`DETECTOR_URL`; skipdit never downloads anything, so fetch it once yourself and pass its path.

The protocol, and where each fact comes from (``SG`` = universome/stylegan-v ``src/metrics/``; ``SD`` =
OpenSparseLLMs/Skip-DiT ``class-to-video/tools/``, the copy the paper's FVD numbers came from, vendored from
Latte):

* call: ``detector(x, rescale=True, resize=True, return_features=True)`` with ``x`` a **uint8** tensor
  (N, 3, T, H, W) in [0, 255]: the dataset's (N, T, C, H, W) is permuted, one channel is repeated to three, and
  the uint8 batch goes in as it is (SG/SD ``frechet_video_distance.py``, ``metric_utils.py``
  ``compute_feature_stats_for_dataset``). The forward signature is ``forward(x, bool rescale=False, bool
  resize=False, bool return_features=False)`` (printed by TorchScript in JunyaoHu/common_metrics_on_video_quality
  issue #7). ``rescale`` maps [0, 255] to [-1, 1] as ``x / 255 * 2 - 1`` (the port's author, universome/
  fvd-comparison issue #4; stylegan-v issue #41: "takes [0, 255] videos in uint8 format and performs all the
  normalization internally"). ``resize`` resizes the frames to 224 x 224 inside the model, as the original
  TensorFlow code does before I3D (bilinear, google-research ``frechet_video_distance.py`` ``preprocess``); the
  port's interpolation mode lives in the binary and was **not** verified here. ``return_features`` returns "raw
  features before the softmax layer" (SG comment): the Kinetics-400 logits, 400-d (the TF code takes the
  "kinetics-i3d-400-logits" layer; the size was not checked against the file).
* counts: ``fvd2048_16f`` = 2048 real and 2048 generated clips of 16 frames (SG/SD ``metric_main.py``).
* clips (``VideoFramesFolderDataset.__getitem__``): frames ``offset + s * arange(16)`` for subsample factor
  ``s``. Real clips take a random offset uniform in ``[0, F - 16 s + s - 1]`` (Python's *unseeded*
  ``random.randint``, so not reproducible there; here seeded per video, see :func:`clip_indices`). Generated clips
  (``generator_as_dataset``) start at frame 0 (``load_n_consecutive_random_offset=False``). A real video needs
  ``16 s`` frames (``discard_short_videos``: ``len >= n * s``); StyleGAN-V silently drops shorter real videos,
  here they are a ValueError.
* subsample: upstream SG ``fvd2048_16f`` uses ``s = 1`` for both sets. SD's ``compute_fvd`` takes
  ``realdata_subsample_factor=3, gendata_subsample_factor=1`` (every 3rd real frame, generated not subsampled),
  the defaults here (:data:`REAL_CLIPS`, :data:`FAKE_CLIPS`). Caveat: SD's ``VideoFramesFolderDataset.__init__``
  then sets ``self.subsample_factor = 1`` whatever it is given, so SD as shipped does **not** subsample real
  clips; ``ClipSpec(subsample=1, random_offset=True)`` reproduces that. SD's ``convert_videos_to_frames.py`` also
  keeps only the first 17 frames of each real video.
* which videos: upstream SG takes the first ``min(N, 2048)`` videos in name order; SD takes
  ``random.sample(range(N), min(N, 2048))`` (unseeded). Here: all when ``N <= max_videos``, else a seeded random
  subset (:func:`select_videos`). Real clips are not mirrored (``--mirror`` unset).
* statistics: features as float32, mean and the *biased* covariance (divided by N, ``FeatureStats.get_mean_cov``);
  the distance ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2))`` (here :func:`skipdit.metrics.fid.frechet_distance`,
  the same value computed without a complex sqrtm).
* TF32 off for cuBLAS and cuDNN (SG/SD ``calc_metrics_for_dataset.py``); 8 clips per detector call at 128² and
  256² (``NUM_FRAMES_IN_BATCH[res] // 16``; the batch only changes rounding).

**Per-frame FID** (:func:`frame_fid`) follows StyleGAN-V's ``fid50k_full`` on video folders: every frame of
every video is one image (``video_to_image_dataset_kwargs``); the feature network is any callable, e.g. an
Inception. (``fid50k_full`` caps the generated frames at 50,000; 2048 x 16 frames stay under it.)
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..io import (
    IMAGE_SUFFIXES,
    NpzArray,
    atomic_write,
    first_line,
    is_listed,
    is_npz_with,
    list_files,
    load_npz,
    read_image,
    read_video,
)
from .fid import feature_statistics, frechet_distance

DETECTOR_FILE = "i3d_torchscript.pt"
DETECTOR_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"  # documentation only
DETECTOR_KWARGS = dict(rescale=True, resize=True, return_features=True)
FEATURE_DIM = 400
CLIP_LENGTH = 16
NUM_VIDEOS = 2048
BATCH_SIZE = 8
FILE_KINDS = (".npy", ".gif", ".mp4")  # preference when a folder holds several: lossless first
PROTOCOL_KEYS = ("clip_length", "subsample", "random_offset", "max_videos", "detector")  # must match to compare
PathLike = str | os.PathLike


# -- protocol ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipSpec:
    """Which clip of each video, and how many videos: ``clip_length`` frames taking every ``subsample``-th one,
    from frame 0 or a random (seeded) offset; at most ``max_videos`` videos (``None``: all)."""

    clip_length: int = CLIP_LENGTH
    subsample: int = 1
    random_offset: bool = False
    max_videos: int | None = NUM_VIDEOS
    seed: int = 0

    def __post_init__(self):
        for name in ("clip_length", "subsample"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise UserError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.max_videos is not None and (int(self.max_videos) != self.max_videos or self.max_videos < 2):
            raise UserError(f"max_videos must be an integer >= 2 or None, got {self.max_videos!r}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise UserError(f"seed must be a non-negative integer, got {self.seed!r}")

    @property
    def frames_needed(self) -> int:
        """``clip_length * subsample``: StyleGAN-V's minimum video length (``discard_short_videos``)."""
        return self.clip_length * self.subsample


REAL_CLIPS = ClipSpec(subsample=3, random_offset=True)  # fvd2048_16f real data, Skip-DiT's compute_fvd defaults
FAKE_CLIPS = ClipSpec()  # generated: 16 consecutive frames from frame 0


def select_videos(count: int, max_videos: int | None = NUM_VIDEOS, seed: int = 0) -> list[int]:
    """Indices of the videos used, ascending: all of them, or a seeded random ``max_videos`` of them."""
    if count < 1:
        raise UserError("the video set is empty")
    if max_videos is None or count <= max_videos:
        return list(range(count))
    return sorted(np.random.default_rng(seed).choice(count, max_videos, replace=False).tolist())


def clip_indices(num_frames: int, spec: ClipSpec = FAKE_CLIPS, index: int = 0, name: str | None = None) -> np.ndarray:
    """Frame indices ``offset + subsample * arange(clip_length)`` of the clip of video ``index`` (F frames).

    With ``random_offset`` the offset is uniform in ``[0, F - clip_length * subsample + subsample - 1]``, as in
    StyleGAN-V, drawn from ``np.random.default_rng([seed, index])``: the same for a video whatever else is read.
    """
    need = spec.frames_needed
    if num_frames < need:
        what = f"video {name!r}" if name else f"video {index}"
        raise UserError(f"{what} has {num_frames} frames, but a clip of {spec.clip_length} frames with subsample "
                         f"{spec.subsample} needs at least {need} (clip_length x subsample, as StyleGAN-V)")
    offset = 0
    if spec.random_offset:
        offset = int(np.random.default_rng([spec.seed, index]).integers(0, num_frames - need + spec.subsample))
    return offset + spec.subsample * np.arange(spec.clip_length)


# -- reading video sets -----------------------------------------------------------------------------------------
def _check_video(frames: np.ndarray, name: str) -> np.ndarray:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise UserError(f"video {name!r} must be uint8 frames (F, H, W, C) with C in (1, 3), "
                         f"got {frames.dtype} {frames.shape}")
    return frames


class VideoSet:
    """The videos of an ``.npz`` (``arr_0``), or of a folder of ``.npy`` / ``.gif`` / ``.mp4`` files or of frame
    folders, in name order. :meth:`read` streams them, so a set larger than memory is fine.

    When a folder holds several file kinds (``sample-many`` may write a video as both .mp4 and .gif), the first of
    ``.npy``, ``.gif``, ``.mp4`` present is used.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        if self.path.is_file() and self.path.suffix == ".npz":
            self._array = NpzArray(self.path)
            shape, dtype = self._array.shape, self._array.dtype
            if dtype != np.uint8 or len(shape) != 5 or shape[-1] not in (1, 3):
                raise UserError(f"{self.path}: arr_0 must be uint8 videos (N, F, H, W, C) with C in (1, 3), "
                                 f"got {dtype} {shape}")
            self.kind = ".npz"
            self.names = [f"{self.path.name}[{k}]" for k in range(shape[0])]
        elif self.path.is_dir():
            entries = sorted(p for p in self.path.iterdir() if is_listed(p))  # no hidden or temporary files
            kinds = [k for k in FILE_KINDS if any(p.suffix.lower() == k and p.is_file() for p in entries)]
            if kinds:
                self.kind = kinds[0]
                self._files = [p for p in entries if p.suffix.lower() == self.kind and p.is_file()]
            else:
                self.kind = "frames"
                self._files = [p for p in entries if p.is_dir() and list_files(p, IMAGE_SUFFIXES)]
            if not self._files:
                raise UserError(f"no videos in {self.path}: expected {', '.join(FILE_KINDS)} files or folders "
                                 f"of {'/'.join(IMAGE_SUFFIXES)} frames")
            self.names = [p.name for p in self._files]
        elif not self.path.exists():
            raise UserError(f"no video set at {self.path}")
        else:
            raise UserError(f"{self.path} is neither an .npz nor a folder of videos")

    def __len__(self) -> int:
        return len(self.names)

    def _read_file(self, path: Path) -> np.ndarray:
        if self.kind == ".npy":
            try:
                return np.load(path, allow_pickle=False)
            except (EOFError, ValueError) as err:  # empty, truncated, pickled or foreign
                raise UserError(f"{path} is not a readable .npy video: {first_line(err)}") from None
        if self.kind == "frames":
            frames = [read_image(q) for q in list_files(path, IMAGE_SUFFIXES)]
            if any(f.shape != frames[0].shape for f in frames):
                raise UserError(f"the frames of {path} differ in size")
            return np.stack(frames)
        return read_video(path).numpy()

    def read(self, indices: Sequence[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, frames (F, H, W, C) uint8)`` for each index (all by default), in ascending order."""
        if self.kind == ".npz":
            for (i,), video in self._array.rows(indices):
                yield i, video[0]
            return
        indices = sorted(range(len(self)) if indices is None else indices)
        if indices and not 0 <= indices[0] <= indices[-1] < len(self):
            raise IndexError(f"video indices must be in [0, {len(self)}), got {indices[0]}..{indices[-1]}")
        for i in indices:
            yield i, _check_video(self._read_file(self._files[i]), self.names[i])


def _as_set(videos: VideoSet | PathLike) -> VideoSet:
    return videos if isinstance(videos, VideoSet) else VideoSet(videos)


def _rgb(frames: np.ndarray) -> np.ndarray:
    """One channel repeated to three, as StyleGAN-V does before its detectors."""
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


def iter_clips(videos: VideoSet | PathLike, spec: ClipSpec = FAKE_CLIPS) -> Iterator[np.ndarray]:
    """The clip (clip_length, H, W, 3) uint8 of each selected video (:func:`select_videos`), in video order."""
    videos = _as_set(videos)
    for i, frames in videos.read(select_videos(len(videos), spec.max_videos, spec.seed)):
        yield _rgb(frames[clip_indices(len(frames), spec, i, videos.names[i])])


# -- the detector -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def no_tf32():
    """TF32 off for cuBLAS and cuDNN inside the block, as StyleGAN-V's metric scripts set it; restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class Detector:
    """An I3D TorchScript module and its file name (recorded with statistics)."""

    def __init__(self, module: torch.jit.ScriptModule, name: str, device: torch.device):
        self.module, self.name, self.device = module, name, device

    @torch.no_grad()
    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 clips (N, T, H, W, 3) -> features (N, D) float32 on the CPU."""
        x = clips.permute(0, 4, 1, 2, 3).contiguous().to(self.device)  # (N, 3, T, H, W) uint8, as StyleGAN-V feeds it
        with no_tf32():
            return self.module(x, **DETECTOR_KWARGS).float().cpu()


def load_detector(path: PathLike, device: str | torch.device = "cpu") -> Detector:
    """``torch.jit.load`` of a local I3D TorchScript file (the official one: :data:`DETECTOR_FILE`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no I3D detector at {path}: get StyleGAN-V's {DETECTOR_FILE} from {DETECTOR_URL} "
                                f"and pass its path (skipdit never downloads)")
    device = torch.device(device)
    try:
        module = torch.jit.load(str(path), map_location=device)
    except Exception as err:  # torch.jit.load raises RuntimeError, ValueError, ... on damaged or foreign files
        raise UserError(f"{path} is not a TorchScript I3D detector: {first_line(err)}") from None
    return Detector(module.eval(), path.name, device)


def _as_detector(detector: Detector | PathLike, device: str | torch.device) -> Detector:
    return detector if isinstance(detector, Detector) else load_detector(detector, device)


def _batches(items: Iterator[np.ndarray], size: int) -> Iterator[torch.Tensor]:
    batch: list[np.ndarray] = []
    for item in items:
        if batch and item.shape != batch[0].shape:
            raise UserError(f"videos of different sizes in one set: {batch[0].shape} and {item.shape}")
        batch.append(item)
        if len(batch) == size:
            yield torch.from_numpy(np.stack(batch))
            batch = []
    if batch:
        yield torch.from_numpy(np.stack(batch))


def clip_features(videos: VideoSet | PathLike, detector: Detector | PathLike, spec: ClipSpec = FAKE_CLIPS, *,
                  batch_size: int = BATCH_SIZE, device: str | torch.device = "cpu", progress: bool = False
                  ) -> np.ndarray:
    """Detector features (N, D) float32 of the clips of a video set, ``batch_size`` clips per call."""
    from tqdm.auto import tqdm

    videos, detector = _as_set(videos), _as_detector(detector, device)
    total = min(len(videos), spec.max_videos or len(videos))
    out, bar = [], tqdm(total=total, desc="I3D features", disable=not progress, dynamic_ncols=True)
    for batch in _batches(iter_clips(videos, spec), batch_size):
        out.append(detector(batch).numpy())
        bar.update(len(batch))
    bar.close()
    return np.concatenate(out)


# -- statistics -----------------------------------------------------------------------------------------------------
def mean_cov(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of features (N, D) as StyleGAN-V's ``FeatureStats``: float32 features, float64 sums,
    the covariance divided by N (not N - 1)."""
    x = np.asarray(features.cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float32)
    mu, sigma = feature_statistics(x)
    return mu, sigma * ((len(x) - 1) / len(x))


@dataclass(frozen=True)
class VideoStats:
    """Feature statistics of a video set and the protocol they were made under (ClipSpec fields + detector)."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int
    protocol: dict


def protocol_of(spec: ClipSpec, detector_name: str) -> dict:
    return {"metric": "fvd", **asdict(spec), "detector": detector_name}


def video_stats(videos: VideoSet | PathLike, detector: Detector | PathLike, spec: ClipSpec = REAL_CLIPS, *,
                batch_size: int = BATCH_SIZE, device: str | torch.device = "cpu", progress: bool = False
                ) -> VideoStats:
    """:class:`VideoStats` of a video set's clips (the real set by default: :data:`REAL_CLIPS`)."""
    detector = _as_detector(detector, device)
    features = clip_features(videos, detector, spec, batch_size=batch_size, progress=progress)
    return VideoStats(*mean_cov(features), len(features), protocol_of(spec, detector.name))


def save_stats(stats: VideoStats, path: PathLike) -> Path:
    """An ``.npz`` with ``mu``, ``sigma``, ``count`` and ``protocol`` (JSON); written atomically."""
    arrays = dict(mu=stats.mu, sigma=stats.sigma, count=np.int64(stats.count), protocol=json.dumps(stats.protocol))
    return atomic_write(Path(path), lambda tmp: np.savez(tmp, **arrays))


def is_stats_file(path: PathLike) -> bool:
    return is_npz_with(path, ("mu", "sigma", "protocol"))


def load_stats(path: PathLike) -> VideoStats:
    if not is_stats_file(path):
        raise UserError(f"{path} is not a statistics file (an .npz with mu, sigma and protocol)")
    data = load_npz(path, ("mu", "sigma", "count", "protocol"))
    if "count" not in data:
        raise UserError(f"{path} is not a statistics file: it has no count")
    return VideoStats(data["mu"], data["sigma"], int(data["count"]), json.loads(str(data["protocol"])))


def check_protocol(stats: VideoStats, spec: ClipSpec, detector_name: str, what: str = "statistics") -> None:
    """ValueError unless ``stats`` were made with this clip spec and detector (:data:`PROTOCOL_KEYS`)."""
    want = protocol_of(spec, detector_name)
    diff = [k for k in PROTOCOL_KEYS if stats.protocol.get(k) != want[k]]
    if stats.protocol.get("metric") != "fvd" or diff:
        diff = diff or ["metric"]
        have = ", ".join(f"{k}={stats.protocol.get(k)!r}" for k in diff)
        need = ", ".join(f"{k}={want.get(k, 'fvd')!r}" for k in diff)
        raise UserError(f"{what} were made with {have}, but this comparison uses {need}: recompute them")


def load_or_compute_stats(source: VideoStats | VideoSet | PathLike, detector: Detector, spec: ClipSpec,
                          what: str = "the", **kwargs) -> VideoStats:
    """Statistics of ``source``: given or saved ones (checked against ``spec`` and the detector), else computed
    from its videos (``kwargs`` go to :func:`video_stats`)."""
    if isinstance(source, VideoStats) or (not isinstance(source, VideoSet) and is_stats_file(source)):
        stats = source if isinstance(source, VideoStats) else load_stats(source)
        check_protocol(stats, spec, detector.name, f"the {what} statistics" + (
            "" if isinstance(source, VideoStats) else f" in {source}"))
        return stats
    return video_stats(source, detector, spec, **kwargs)


def fvd(real: VideoStats | VideoSet | PathLike, fake: VideoStats | VideoSet | PathLike,
        detector: Detector | PathLike, *, real_clips: ClipSpec = REAL_CLIPS, fake_clips: ClipSpec = FAKE_CLIPS,
        batch_size: int = BATCH_SIZE, device: str | torch.device = "cpu", progress: bool = False) -> float:
    """FVD between two video sets, either given as saved statistics (checked against the protocol)."""
    if real_clips.clip_length != fake_clips.clip_length:
        raise UserError(f"real and fake clips must have the same length, got {real_clips.clip_length} and "
                         f"{fake_clips.clip_length}")
    detector = _as_detector(detector, device)
    kwargs = dict(batch_size=batch_size, progress=progress)
    r = load_or_compute_stats(real, detector, real_clips, "real", **kwargs)
    f = load_or_compute_stats(fake, detector, fake_clips, "fake", **kwargs)
    return frechet_distance(r.mu, r.sigma, f.mu, f.sigma)


# -- per-frame FID ------------------------------------------------------------------------------------------------
def frame_features(videos: VideoSet | PathLike, features: Callable[[torch.Tensor], torch.Tensor | np.ndarray], *,
                   max_videos: int | None = None, seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """``features`` (N, D) of every frame of the selected videos, called on uint8 (B, H, W, 3) batches."""
    videos = _as_set(videos)
    frames = (frame for _, video in videos.read(select_videos(len(videos), max_videos, seed)) for frame in _rgb(video))
    out = []
    with torch.no_grad(), no_tf32():
        for batch in _batches(frames, batch_size):
            f = features(batch)
            out.append(np.asarray(f.detach().float().cpu() if isinstance(f, torch.Tensor) else f, np.float32))
    return np.concatenate(out)


def frame_fid(real: VideoSet | PathLike, fake: VideoSet | PathLike,
              features: Callable[[torch.Tensor], torch.Tensor | np.ndarray], *, max_videos: int | None = None,
              seed: int = 0, batch_size: int = 64) -> float:
    """Fréchet distance between the per-frame features of two video sets (StyleGAN-V ``fid50k_full`` on video
    folders: every frame is an image; mean and covariance as :func:`mean_cov`)."""
    a, b = (frame_features(v, features, max_videos=max_videos, seed=seed, batch_size=batch_size) for v in (real, fake))
    return frechet_distance(*mean_cov(a), *mean_cov(b))


def evaluate_fvd(
    samples: PathLike, reference: PathLike, detector: Detector, *, clip_length: int = 16, real_subsample: int = 1,
    num_videos: int | None = NUM_VIDEOS, seed: int = 0, batch_size: int = 8, save_ref_stats: PathLike | None = None,
    frame_fid_net=None, progress: bool = False,
) -> dict:
    """FVD of ``samples`` against ``reference`` (each videos or a stats ``.npz``): real clips of ``clip_length``
    frames every ``real_subsample`` frames from a random offset, generated clips from frame 0, on the same
    ``num_videos`` videos chosen by ``seed``. ``save_ref_stats`` writes the real statistics for later runs;
    ``frame_fid_net`` (a :class:`~skipdit.metrics.features.FeatureNet`) adds the per-frame FID."""
    real_clips = ClipSpec(clip_length, real_subsample, random_offset=True, max_videos=num_videos, seed=seed)
    fake_clips = ClipSpec(clip_length, 1, max_videos=num_videos, seed=seed)
    if save_ref_stats and is_stats_file(reference):
        raise UserError(f"{reference} already holds statistics; saving reference statistics needs the real videos")
    if frame_fid_net is not None and (is_stats_file(samples) or is_stats_file(reference)):
        raise UserError("the per-frame FID needs the videos of both sets, not saved statistics")
    options = dict(batch_size=batch_size, progress=progress)
    real = load_or_compute_stats(reference, detector, real_clips, "real", **options)
    fake = load_or_compute_stats(samples, detector, fake_clips, "fake", **options)
    if save_ref_stats:
        save_stats(real, save_ref_stats)
    result = {"fvd": fvd(real, fake, detector, real_clips=real_clips, fake_clips=fake_clips), "samples": fake.count,
              "reference": real.count, "feature_net": detector.name, "real_clips": asdict(real_clips),
              "fake_clips": asdict(fake_clips)}
    if frame_fid_net is not None:
        result["frame_fid"] = frame_fid(reference, samples, frame_fid_net.pool, max_videos=num_videos, seed=seed,
                                        batch_size=4 * batch_size)
    return result
