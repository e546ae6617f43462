"""Images and videos on disk: uint8 conversion, image reading, per-sample PNGs, labelled grids, gif / mp4, seed
lists, lazy .npz arrays."""

from __future__ import annotations

import math
import os
import re
import secrets
import struct
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from zlib import error as zlib_error

import numpy as np
import torch

from .errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def read_image(path) -> np.ndarray:
    """An image file as uint8 (H, W, C): grey stays one channel, every other mode becomes RGB."""
    array = np.asarray(open_image(path, keep_grey=True))
    return array[..., None] if array.ndim == 2 else array


def open_image(path, keep_grey: bool = False):
    """An image file as a loaded PIL image in RGB (grey stays ``L`` with ``keep_grey``); a corrupt, truncated or
    foreign file is a :class:`UserError` naming it, not PIL's UnidentifiedImageError or bare OSError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy() if image.mode == "RGB" or (keep_grey and image.mode == "L") else image.convert("RGB")
    except UnidentifiedImageError:
        raise UserError(f"{path} is not an image PIL can read (corrupt or of another kind)") from None
    except OSError as err:
        if err.filename is not None:  # the file itself could not be opened: the CLI reports path errors
            raise
        # Pillow raises a bare OSError ("image file is truncated", "broken data stream") while decoding
        raise UserError(f"{path} is a damaged image: {err}") from None
    except (SyntaxError, ValueError) as err:  # Pillow's plugins raise these on malformed headers and chunks
        raise UserError(f"{path} is a damaged image: {err}") from None


TEMP_MARKER = ".tmp-"  # in every temporary name atomic_write makes (which also start with a dot)


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a temporary file of :func:`atomic_write` (a killed writer's, or one in progress)."""
    return path.name.startswith(".") and TEMP_MARKER in path.name


def is_listed(path: Path) -> bool:
    """Whether a folder reader should see ``path``: hidden names (leading dot) and :func:`atomic_write`'s
    temporary files are never data, since a killed writer can leave them behind."""
    return not path.name.startswith(".") and TEMP_MARKER not in path.name


def list_files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """The plain files of ``folder`` whose suffix (any case) is one of ``suffixes``, hidden and temporary files
    left out (:func:`is_listed`), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in suffixes and is_listed(p) and p.is_file())


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8, rounding as torchvision's ``save_image`` does."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu()


MAX_SEED = 2**64 - 1
MAX_LIST = 10_000_000  # 200x the 50,000 samples of an FID run; a longer list is a typo and would not fit in memory


def parse_int_list(text: str, what: str = "seeds", limit: int = MAX_LIST, *, hint: str = "") -> list[int]:
    """``"0-3,7,10-11"`` -> ``[0, 1, 2, 3, 7, 10, 11]``. More than ``limit`` numbers is refused before any list
    is built (``0-999999999`` would ask for gigabytes), with ``hint`` appended to the message; so is a number
    above 2**64 - 1, the largest seed ``torch.Generator.manual_seed`` takes."""
    ranges = []
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise UserError(f"invalid {what} {text!r}: use numbers and ranges like 0-7,10")
        lo, hi = int(match[1]), int(match[2] or match[1])
        if hi < lo:
            raise UserError(f"invalid {what} range {part!r}: end before start")
        if hi > MAX_SEED:
            raise UserError(f"invalid {what} {text!r}: a number must be at most {MAX_SEED} (2**64 - 1)")
        ranges.append(range(lo, hi + 1))
    count = sum(len(r) for r in ranges)
    if count > limit:
        raise UserError(f"{text!r} names {count:,} {what}; at most {limit:,} are allowed{hint}")
    out = [k for r in ranges for k in r]
    if not out:
        raise UserError(f"no {what} given")
    return out


def _pil(image: torch.Tensor):
    from PIL import Image

    array = image.numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def save_image(image: torch.Tensor, path) -> Path:
    """One uint8 (H, W, C) image as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _pil(image).save(path)
    return path


def sample_name(seed: int, label: int) -> str:
    return f"{seed:06d}-{label}.png"


def save_samples(images: torch.Tensor, seeds: Sequence[int], labels: Sequence[int], out_dir) -> list[Path]:
    """One PNG per sample, named ``<seed>-<label>.png`` (e.g. ``000007-3.png``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for image, seed, label in zip(images, seeds, labels):
        path = out_dir / sample_name(seed, label)
        _pil(image).save(path)
        paths.append(path)
    return paths


def make_grid(images: torch.Tensor, captions: Sequence[str], ncols: int | None = None, min_cell: int = 96):
    """A PIL grid with a caption under each image; small images are enlarged (nearest) to ``min_cell``."""
    from PIL import Image, ImageDraw

    n, h, w, _ = images.shape
    ncols = ncols or min(n, math.ceil(math.sqrt(n)) if n > 8 else n)
    zoom = max(1, math.ceil(min_cell / max(h, w)))
    cw, ch, text_h, pad = w * zoom, h * zoom, 14, 4
    rows = math.ceil(n / ncols)
    grid = Image.new("RGB", (ncols * (cw + pad) + pad, rows * (ch + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    for k, (image, caption) in enumerate(zip(images, captions)):
        r, c = divmod(k, ncols)
        x, y = pad + c * (cw + pad), pad + r * (ch + text_h + pad)
        cell = _pil(image).convert("RGB").resize((cw, ch), Image.NEAREST)
        grid.paste(cell, (x, y))
        draw.text((x + 2, y + ch + 1), caption, fill="black")
    return grid


def save_grid(images: torch.Tensor, captions: Sequence[str], path, ncols: int | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(images, captions, ncols).save(path)
    return path



# -- videos ------------------------------------------------------------------------------------------------
VIDEO_FORMATS = ("mp4", "gif")
MIN_VIDEO_SIDE = 128  # the default upscale makes the short side at least this (16x16 -> 128x128)
# libx264 CRF. 0 would be lossless, but x264 then writes the "High 4:4:4 Predictive" profile, which browsers and
# QuickTime refuse to play; 4 keeps the plain High profile and costs at most 2 levels on grey digits.
MP4_CRF = 4
_NEED_FFMPEG = "writing mp4 needs imageio-ffmpeg: pip install 'skipdit[video]'"


def _video_format(path: Path) -> str:
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in VIDEO_FORMATS:
        raise UserError(f"unknown video format {path.suffix!r} ({path.name}): use one of {VIDEO_FORMATS}")
    return fmt


def default_video_scale(height: int, width: int) -> int:
    """The smallest integer zoom that makes ``min(height, width) >= MIN_VIDEO_SIDE`` (1 for large videos)."""
    return max(1, math.ceil(MIN_VIDEO_SIDE / max(1, min(height, width))))


def _check_frames(frames: torch.Tensor) -> None:
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] not in (1, 3) or len(frames) == 0:
        raise UserError(f"frames must be uint8 (F, H, W, C) with C in (1, 3) and F >= 1, "
                         f"got {frames.dtype} {tuple(frames.shape)}")


def atomic_write(path: Path, write) -> Path:
    """``write(tmp_path)`` into a temporary file next to ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name rather than mkstemp, so the file gets the usual permissions. It ends in the real suffix
    # because the writers pick the format from it (PIL, ffmpeg; np.save / np.savez append theirs otherwise);
    # the leading dot and TEMP_MARKER make folder readers (is_listed) skip a file a killed run leaves behind.
    tmp = path.with_name(f".{path.stem}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # some writers (safetensors) create their files 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_video(frames: torch.Tensor, path, *, fps: int = 8, scale: int | None = None) -> Path:
    """Write uint8 frames (F, H, W, C), C in (1, 3), to ``path``; the suffix picks the format (``VIDEO_FORMATS``).

    Frames are enlarged ``scale`` times (nearest); ``None`` picks :func:`default_video_scale`, so a 16x16 video
    becomes 128x128. ``.gif`` is lossless for grey or <= 256-colour videos and keeps every frame, repeated ones
    included. ``.mp4`` is H.264 yuv420p at ``MP4_CRF`` (near-lossless; plays everywhere); odd sides are padded
    to even by repeating the last row / column. The file appears atomically (temporary file, then rename).
    """
    path = Path(path)
    fmt = _video_format(path)
    _check_frames(frames)
    if int(fps) != fps or fps < 1:
        raise UserError(f"fps must be a positive integer, got {fps!r}")
    scale = default_video_scale(*frames.shape[1:3]) if scale is None else scale
    if int(scale) != scale or scale < 1:
        raise UserError(f"scale must be a positive integer or None, got {scale!r}")
    frames = frames.cpu().repeat_interleave(int(scale), 1).repeat_interleave(int(scale), 2)  # (F, sH, sW, C)
    if fmt == "gif":
        return atomic_write(path, lambda tmp: _write_gif(frames, tmp, int(fps)))
    try:
        import imageio_ffmpeg
    except ImportError as err:
        raise UserError(_NEED_FFMPEG) from err
    return atomic_write(path, lambda tmp: _write_mp4(imageio_ffmpeg, frames, tmp, int(fps)))


def _write_mp4(imageio_ffmpeg, frames: torch.Tensor, path: Path, fps: int) -> None:
    _, h, w, c = frames.shape
    frames = torch.nn.functional.pad(  # yuv420p needs even sides; replicate so no border line appears
        frames.permute(0, 3, 1, 2).float(), (0, w % 2, 0, h % 2), mode="replicate"
    ).to(torch.uint8).permute(0, 2, 3, 1)  # (F, H', W', C)
    writer = imageio_ffmpeg.write_frames(
        str(path), (frames.shape[2], frames.shape[1]), pix_fmt_in="gray" if c == 1 else "rgb24",
        pix_fmt_out="yuv420p", fps=fps, codec="libx264", quality=None, macro_block_size=1,
        ffmpeg_log_level="error",
        # area + accurate rounding for the RGB -> YUV 4:2:0 conversion: with the default bicubic chroma filter
        # an 8x-enlarged random-colour video comes back up to 24 levels off, with these at most 4.
        output_params=["-crf", str(MP4_CRF), "-movflags", "+faststart", "-sws_flags", "area+accurate_rnd"],
    )
    writer.send(None)
    try:
        for frame in frames:
            writer.send(frame.contiguous().numpy().tobytes())
    finally:
        writer.close()


def _gif_palette(frames: torch.Tensor):
    """(F, H, W, C) uint8 -> palette indices (F, H, W) uint8 and one global RGB palette (bytes, <= 256 colours).

    Exact when the video has at most 256 colours (always for grey); otherwise a median-cut palette of all frames.
    """
    from PIL import Image

    array = frames.numpy()
    if array.shape[-1] == 1:
        grey = bytes(v for level in range(256) for v in (level, level, level))
        return array[..., 0], grey
    keys = (array[..., 0].astype(np.int32) << 16) | (array[..., 1].astype(np.int32) << 8) | array[..., 2]
    colours, indices = np.unique(keys, return_inverse=True)
    if len(colours) <= 256:
        rgb = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], -1).astype(np.uint8)
        return indices.reshape(keys.shape).astype(np.uint8), rgb.tobytes()
    f, h, w, _ = array.shape
    strip = Image.fromarray(array.reshape(f * h, w, 3)).quantize(256, dither=Image.Dither.NONE)
    return np.asarray(strip).reshape(f, h, w), bytes(strip.getpalette()[: 3 * 256])


def _write_gif(frames: torch.Tensor, path: Path, fps: int) -> None:
    # Assembled here rather than with ``Image.save(save_all=True)``: Pillow merges consecutive identical frames
    # (adding up their durations) and offers no option to turn that off, which would change the frame count.
    # Pillow still does the LZW coding of each full frame (``GifImagePlugin.getdata``).
    from PIL import GifImagePlugin, Image

    indices, palette = _gif_palette(frames)
    f, h, w = indices.shape
    bits = max(1, math.ceil(math.log2(max(2, len(palette) // 3))))  # the colour table holds 2**bits entries
    table = palette + bytes(3 * (2**bits) - len(palette))
    header = b"GIF89a" + struct.pack("<HHBBB", w, h, 0x80 | (bits - 1), 0, 0) + table
    header += b"!\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", 0) + b"\x00"  # loop forever
    with open(path, "wb") as out:
        out.write(header)
        for k in range(f):
            # delays are in 1/100 s: take the differences of rounded cumulative times so the mean rate is exact
            delay = round((k + 1) * 100 / fps) - round(k * 100 / fps)
            image = Image.fromarray(np.ascontiguousarray(indices[k]))  # mode "L": its values are the palette indices
            for chunk in GifImagePlugin.getdata(image, duration=10 * delay, disposal=1):
                out.write(chunk)
        out.write(b";")


def read_video(path) -> torch.Tensor:
    """A gif or mp4 as uint8 (F, H, W, 3)."""
    path = Path(path)
    fmt = _video_format(path)
    if not path.is_file():
        raise UserError(f"no video at {path}")
    if fmt == "gif":
        frames = _read_gif(path)
    else:
        frames = _read_mp4(path)
    if not frames:
        raise UserError(f"{path} holds no frames")
    return torch.from_numpy(np.stack(frames))


def _read_gif(path: Path) -> list[np.ndarray]:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]
    except UnidentifiedImageError:
        raise UserError(f"{path} is not a gif PIL can read (corrupt or of another kind)") from None
    except OSError as err:
        if err.filename is not None:
            raise
        raise UserError(f"{path} is a damaged gif: {err}") from None  # Pillow's "image file is truncated"


def _read_mp4(path: Path) -> list[np.ndarray]:
    try:
        import imageio_ffmpeg
    except ImportError as err:
        raise UserError(_NEED_FFMPEG.replace("writing", "reading")) from err
    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        w, h = next(reader)["size"]
        return [np.frombuffer(raw, np.uint8).reshape(h, w, 3) for raw in reader]
    except (OSError, RuntimeError, ValueError) as err:
        # imageio-ffmpeg raises OSError "Could not load meta information" (with ffmpeg's whole log appended) for
        # a file ffmpeg cannot open, RuntimeError when it stops mid-stream, and a short frame fails the reshape
        if isinstance(err, OSError) and err.filename is not None:
            raise
        raise UserError(f"{path} is not a video ffmpeg can read: {first_line(err)}") from None
    finally:
        reader.close()


def save_videos(videos: torch.Tensor, names: Sequence[str], out_dir, *, formats: Sequence[str] = ("mp4",),
                fps: int = 8, scale: int | None = None) -> list[Path]:
    """``out_dir/<name>.<format>`` for each video (N, F, H, W, C) uint8 and each format, in that order."""
    if len(names) != len(videos):
        raise UserError(f"{len(videos)} videos but {len(names)} names")
    bad = [f for f in formats if f not in VIDEO_FORMATS]
    if bad:
        raise UserError(f"unknown video format(s) {bad}: use {VIDEO_FORMATS}")
    out_dir = Path(out_dir)
    return [save_video(video, out_dir / f"{name}.{fmt}", fps=fps, scale=scale)
            for video, name in zip(videos, names) for fmt in formats]


def video_to_uint8(videos: torch.Tensor) -> torch.Tensor:
    """(N, C, F, H, W) in [-1, 1] -> (N, F, H, W, C) uint8, each frame rounded exactly as :func:`to_uint8`."""
    n, c, f, h, w = videos.shape
    frames = to_uint8(videos.transpose(1, 2).reshape(n * f, c, h, w))  # (N*F, H, W, C)
    return frames.reshape(n, f, h, w, c)


def save_video_grid(videos: torch.Tensor, captions: Sequence[str], path, *, fps: int = 8,
                    ncols: int | None = None) -> Path:
    """One animated gif/mp4 whose frame ``k`` is :func:`make_grid` of frame ``k`` of every video (N, F, H, W, C)."""
    if videos.dim() != 5:
        raise UserError(f"videos must be uint8 (N, F, H, W, C), got {tuple(videos.shape)}")
    _video_format(Path(path))
    frames = [np.asarray(make_grid(videos[:, k], captions, ncols)) for k in range(videos.shape[1])]
    return save_video(torch.from_numpy(np.stack(frames)), path, fps=fps, scale=1)


# -- .npz files ---------------------------------------------------------------------------------------------
def load_npz(path, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays ``keys`` (those present; all by default) of an ``.npz``, loaded (an ADM batch's statistics
    without its 10,000 images); an empty, truncated or foreign file is a :class:`UserError` naming it rather
    than numpy's EOFError / BadZipFile / pickle ValueError."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):  # np.load read an .npy and returned its array
            raise UserError(f"{path} is a single .npy array, not an .npz archive")
        with data:
            return {k: data[k] for k in data.files if keys is None or k in keys}
    except (EOFError, zipfile.BadZipFile, zlib_error, ValueError) as err:
        raise UserError(f"{path} is not a valid .npz file ({first_line(err)})") from None


def is_npz_with(path, keys: Sequence[str]) -> bool:
    """Whether ``path`` is an ``.npz`` whose members include all ``keys``; a damaged archive is a UserError."""
    path = Path(path)
    if not (path.is_file() and path.suffix == ".npz"):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except zipfile.BadZipFile:
        raise UserError(f"{path} is not a valid .npz file (empty or truncated)") from None
    return {f"{k}.npy" for k in keys} <= names


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# -- .npz members, read lazily -------------------------------------------------------------------------------
class NpzArray:
    """One array of an ``.npz`` (``arr_0`` by default) read from its zip member without loading it whole: the
    shape and dtype come from the header, and :meth:`rows` streams the leading-axis items, so a 50,000-image ADM
    batch or a folder-sized set of videos never sits in memory. Stored (uncompressed) and compressed members
    both work; rows are read forwards only."""

    def __init__(self, path, key: str = "arr_0"):
        self.path, self.key = Path(path), key
        if not self.path.is_file():
            raise UserError(f"{self.path} not found")
        try:
            with zipfile.ZipFile(self.path) as z:
                names = z.namelist()
                if f"{key}.npy" not in names:
                    keys = [n[:-4] for n in names if n.endswith(".npy")]
                    raise UserError(f"{self.path} has no {key} array (it holds {', '.join(keys) or 'nothing'})")
                with z.open(f"{key}.npy") as f:
                    shape, fortran, dtype = self._header(f)
        except zipfile.BadZipFile:
            raise UserError(f"{self.path} is not a valid .npz file") from None
        if fortran or dtype.hasobject:
            raise UserError(f"{self.path}: {key} must be a C-ordered array of numbers, got {dtype}")
        self.shape, self.dtype = tuple(shape), dtype

    def _header(self, f):
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise UserError(f"{self.path}: unsupported .npy format version {version} of {self.key}")
        return read(f)

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, indices: Sequence[int] | None = None, batch_size: int = 1) -> Iterator[tuple[list[int], np.ndarray]]:
        """``(indices, array (B, *shape[1:]))`` for the given row indices (all by default), ascending, in batches."""
        indices = sorted(range(len(self)) if indices is None else indices)
        if indices and not 0 <= indices[0] <= indices[-1] < len(self):
            raise IndexError(f"row indices must be in [0, {len(self)}), got {indices[0]}..{indices[-1]}")
        size = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        with zipfile.ZipFile(self.path) as z, z.open(f"{self.key}.npy") as f:
            self._header(f)
            start = f.tell()
            for lo in range(0, len(indices), batch_size):
                chunk = indices[lo : lo + batch_size]
                data = []
                for i in chunk:
                    f.seek(start + i * size)  # forwards only: cheap on a compressed member
                    row = f.read(size)
                    if len(row) != size:
                        raise UserError(f"{self.path}: {self.key} ends early, at row {i}")
                    data.append(row)
                yield chunk, np.frombuffer(b"".join(data), self.dtype).reshape(len(chunk), *self.shape[1:])
