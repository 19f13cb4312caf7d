"""Decode an image file into a greyscale float array, safely and at no more resolution than needed.

Plain JPEGs (sequential, greyscale or YCbCr: what scanners and most cameras write) go straight to
libjpeg-turbo through simplejpeg, decoded to grey at the DCT scale that Pillow's draft mode would
choose, so the pixels are the same; everything else, and any JPEG that simplejpeg refuses, goes
through Pillow.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import stat
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import simplejpeg
from PIL import ExifTags, Image, ImageOps, ImageStat, UnidentifiedImageError

from . import video
from .errors import DigitscanError

MAX_PIXELS = 64_000_000
"""Images larger than this (width x height) are refused as possible decompression bombs."""

MAX_DECODE_SECONDS = 20.0
"""A file that takes longer than this to decode (a JPEG with thousands of progressive scans) gets an
error row instead of holding the run."""
MAX_SIDE = 4096
"""The longer side an image is reduced to at most, whatever its shape, so the work per image is bounded."""
COARSE_SIDE = 48
"""First look: images are reduced (JPEG draft mode, then a box filter) to about this shorter side."""
FINE_SIDE = 256
"""Second look, when the ink is small at COARSE_SIDE: reduced to about this shorter side only."""
OPAQUE = 128
"""Alpha from which a pixel counts as opaque (of 255)..."""
CANVAS_SOLIDITY = 0.95
"""...and an opaque area that fills this share of its bounding box is a canvas, cut out of its transparent frame."""
JPEG_START = b"\xff\xd8"
SEQUENTIAL_FRAMES = (0xC0, 0xC1)
"""Start-of-frame markers of baseline and extended sequential Huffman JPEGs: one pass, so their cost is
bounded by their size (a progressive JPEG can hold thousands of scans: Pillow decodes it, time-bounded)."""
MAX_TURBO_BYTES = 256 * 2**20
"""A larger JPEG is left to Pillow, which reads it in pieces, rather than read into memory whole."""
DRAFT_SCALES = (8, 4, 2, 1)


class DecodeError(DigitscanError):
    """An input that cannot be read as an image; the message says why, for the error column."""


def load_grey(source: str | Path | Image.Image, side: int = FINE_SIDE) -> np.ndarray:
    """Read a file (or PIL image) as a 2-D array of grey levels: uint8 for 8-bit images, float32 in
    [0, 1] for deeper ones (`preprocess.prepare` takes either).

    EXIF orientation is applied, transparency is composited onto white, animated images use their
    first frame, and images larger than needed are reduced to about `side` pixels on their shorter
    side (by an integer factor: JPEG draft decoding, then a box filter).
    """
    if isinstance(source, Image.Image):
        return _to_array(_reduce(_upright(source), side))
    frame = video.split_name(str(source))
    if frame is not None or video.is_video(str(source)):
        return _to_array(_reduce(_video_frame(str(source), frame), side))
    try:
        _check_regular(source)
        with open(source, "rb") as file:
            # A sequential JPEG's cost is bounded by its size: only Pillow's decoding needs the timer.
            data = _jpeg_bytes(file)
            turbo = None if data is None else _turbo_jpeg(data, side)
            if turbo is not None:
                return turbo
            file.seek(0)
            with _time_limit(MAX_DECODE_SECONDS), warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                warnings.filterwarnings("ignore", "Corrupt EXIF data", UserWarning)  # as _orientation does
                with Image.open(file) as im:
                    _check_size(*im.size)
                    if im.format == "JPEG" and im.mode in ("L", "RGB", "YCbCr"):
                        im.draft("L", (side, side))
                    return _to_array(_reduce(_upright(im), side))
    except DecodeError:
        raise
    except _TooSlow:
        raise DecodeError(f"took over {MAX_DECODE_SECONDS:g} s to decode (a pathological file?)") from None
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except IsADirectoryError:
        raise DecodeError("is a directory, not an image") from None
    except PermissionError:
        raise DecodeError("permission denied") from None
    except UnidentifiedImageError:
        size = _size_or_none(source)
        raise DecodeError("empty file" if size == 0 else "not an image (unknown or unsupported format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DecodeError("refused: too many pixels (possible decompression bomb)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DecodeError("symbolic link loop") from None
        raise DecodeError(f"broken or truncated image ({_first_line(exc)})") from None
    except (ValueError, SyntaxError, EOFError, MemoryError, struct.error) as exc:
        raise DecodeError(f"cannot decode image ({_first_line(exc)})") from None


def _video_frame(name: str, frame: tuple[str, float] | None) -> Image.Image:
    """The `frame` (video path, time) that `name` names; for a video's own path (not expanded into
    frames, so unreadable) raise with the reason."""
    try:
        if frame is None:
            raise DecodeError(video.why_unreadable(name))
        return video.read_frame(*frame)
    except video.VideoError as exc:
        raise DecodeError(str(exc)) from None


class _TooSlow(Exception):
    pass


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise _TooSlow in this block after `seconds` (a timer signal; only in a process's main thread,
    where DataLoader workers and a run without workers decode). PIL decodes in chunks, so it stops.
    A caller's own running timer is left alone (and then there is no limit)."""
    if threading.current_thread() is not threading.main_thread() or signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise _TooSlow

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _check_regular(path: str | Path) -> None:
    """Only regular files are opened: opening a named pipe blocks until someone writes to it."""
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(path)
    if not stat.S_ISREG(mode):
        kind = "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise DecodeError(f"not a regular file ({kind})")


def _check_size(w: int, h: int) -> None:
    if w < 1 or h < 1:
        raise DecodeError("image has no pixels")
    if w * h > MAX_PIXELS:
        raise DecodeError(f"refused: {w}x{h} is over the {MAX_PIXELS:,}-pixel limit (possible decompression bomb)")


def plain_jpeg_bytes(source: str | Path) -> bytes | None:
    """A file's bytes, when it is a plain JPEG that needs no turning (no EXIF orientation) and no more
    than MAX_PIXELS: what a device's decoder takes whole. None for any other file, readable or not
    (`load_grey` then reads it, or says what is wrong)."""
    try:
        _check_regular(source)
        with open(source, "rb") as file:
            data = _jpeg_bytes(file)
        plain = None if data is None else _plain_jpeg(data)
        if plain is None or _orientation(plain[2]) != 1:
            return None
        _check_size(plain[0], plain[1])
    except (OSError, DecodeError):
        return None
    return data


def _jpeg_bytes(file: BinaryIO) -> bytes | None:
    """The whole file, when it starts as a JPEG does and is small enough to hold in memory."""
    if file.read(len(JPEG_START)) != JPEG_START or os.fstat(file.fileno()).st_size > MAX_TURBO_BYTES:
        return None
    return JPEG_START + file.read()


def _plain_jpeg(data: bytes) -> tuple[int, int, bytes | None] | None:
    """Width, height and EXIF block of a JPEG that libjpeg-turbo decodes in one pass (sequential, grey
    or YCbCr); None for any other."""
    layout = _jpeg_layout(data)
    if layout is None or layout[0] not in SEQUENTIAL_FRAMES:
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return (width, height, layout[1]) if colorspace in ("Gray", "YCbCr") else None


def _orientation(source: Image.Image | bytes | None) -> int:
    """The EXIF orientation of an image, or of a raw EXIF block: 1 is as stored. A broken block counts
    as 1: the picture is still there, and viewers show it so."""
    if source is None:
        return 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns of corrupt EXIF data as it reads on
            if isinstance(source, Image.Image):
                tags = source.getexif()
            else:
                tags = Image.Exif()
                tags.load(source)
            return int(tags.get(ExifTags.Base.Orientation, 1))
    except _TooSlow:
        raise
    except Exception:  # metadata is any bytes a file holds: whatever Pillow's parser makes of them
        return 1


def _turbo_jpeg(data: bytes, side: int) -> np.ndarray | None:
    """A plain JPEG's grey levels by libjpeg-turbo, as `load_grey` gives them; None where Pillow must decode."""
    plain = _plain_jpeg(data)
    if plain is None:
        return None
    width, height, exif = plain
    _check_size(width, height)
    # Pillow's draft: the largest DCT scale that leaves both sides at least `side`.
    scale = next((d for d in DRAFT_SCALES if min(width, height) // side >= d), 1)
    try:
        grey = simplejpeg.decode_jpeg(data, colorspace="GRAY", min_factor=scale,
                                      min_height=-(-height // scale), min_width=-(-width // scale))
    except ValueError:  # damaged: Pillow reads what can be read, or says why not
        return None
    if exif is None and reduction(grey.shape[:2], side) < 2:
        return grey[:, :, 0]  # as it stands: the common case costs no copy
    im = Image.fromarray(grey[:, :, 0])
    if exif is not None:
        im.info["exif"] = exif
    return _to_array(_reduce(_upright(im), side))


def _jpeg_layout(data: bytes) -> tuple[int, bytes | None] | None:
    """The start-of-frame marker and the EXIF block (APP1), read from the segments before the image
    data; None when they are not where the format puts them."""
    exif, at = None, len(JPEG_START)
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker, length = data[at + 1], int.from_bytes(data[at + 2:at + 4], "big")
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0xE1 and data[at + 4:at + 10] == b"Exif\x00\x00":
            exif = data[at + 4:at + 2 + length]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # not DHT, JPG, DAC
            return marker, exif
        at += 2 + length
    return None


def _upright(im: Image.Image) -> Image.Image:
    """First frame, EXIF-rotated, transparency flattened (see `_flatten`)."""
    if _orientation(im) != 1:
        im = ImageOps.exif_transpose(im)  # a copy: a caller's own image is never changed
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBa", "La", "PA"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA") or (im.mode == "RGB" and "transparency" in im.info):
        im = _flatten(im.convert("RGBA"))
    return im


def _flatten(rgba: Image.Image) -> Image.Image:
    """An image with transparency as the opaque picture a person sees in a drawing app.

    An opaque canvas inside a transparent frame (a drawing app's export) is cut out: whatever colour
    the transparent pixels hold is not part of the drawing. Strokes on a transparent background are
    laid on white when they are dark and on black when they are light, so they always show.
    """
    alpha = rgba.getchannel("A")
    if alpha.getextrema()[0] == 255:
        return rgba.convert("RGB")
    opaque = alpha.point(lambda v: 255 if v >= OPAQUE else 0)
    box = opaque.getbbox()
    if box is not None and box != (0, 0, *rgba.size):
        solid = ImageStat.Stat(opaque.crop(box)).mean[0] / 255
        if solid >= CANVAS_SOLIDITY:
            rgba = rgba.crop(box)
            alpha, opaque = alpha.crop(box), opaque.crop(box)
    light = box is not None and ImageStat.Stat(rgba.convert("L"), mask=opaque).mean[0] > 127
    ground = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if light else (255, 255, 255, 255))
    return Image.alpha_composite(ground, rgba).convert("RGB")


def _reduce(im: Image.Image, side: int) -> Image.Image:
    """Reduce by an integer factor to about `side` on the shorter side, and to at most MAX_SIDE on the
    longer (a thin strip is no digit, but must not cost gigabytes); deep images stay deep."""
    factor = reduction(im.size, side)
    if factor >= 2:
        if im.mode in ("I;16", "I;16B", "I;16L"):
            im = im.convert("I")
        elif im.mode not in ("L", "RGB", "I", "F"):
            im = im.convert("RGB")
        im = im.reduce(factor)
    return im


def reduction(size: tuple[int, ...], side: int) -> int:
    """The integer factor an image's sides are divided by to reach about `side` (1 or less: none)."""
    return max(math.floor(min(size) / side), math.ceil(max(size) / MAX_SIDE))


def _to_array(im: Image.Image) -> np.ndarray:
    """Greyscale uint8 as decoded, or float32 in [0, 1] for high bit depths (scaled by their own depth)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float32)
        top = float(a.max()) if a.size else 1.0
        if im.mode == "F" and top <= 1.0:
            return np.clip(a, 0.0, 1.0)
        depth = 2.0 ** math.ceil(math.log2(max(top, 1.0) + 1.0)) - 1.0
        return np.clip(a / max(depth, 255.0), 0.0, 1.0)
    if im.mode != "L":
        try:
            im = im.convert("L")
        except ValueError:
            im = im.convert("RGB").convert("L")
    return np.frombuffer(im.tobytes(), dtype=np.uint8).reshape(im.height, im.width)


def _size_or_none(source: str | Path) -> int | None:
    try:
        return Path(source).stat().st_size
    except OSError:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]
