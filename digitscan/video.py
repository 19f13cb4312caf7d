"""Video files as inputs: each sampled frame is one input, named like `clip.mp4#t=1.250` (its time in
seconds), decoded where images are and read like a photo. Needs PyAV, the `video` extra.

`expand` turns a video's path into the names of its sampled frames (the packets' times are read
without decoding); `read_frame` decodes one, keeping its place in the video, so that the frames of
a batch, which come in order, cost one pass.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from PIL import Image

from .errors import DigitscanError

SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm"})
MARK = "#t="
"""Between a video's path and a frame's time in the frame's name."""
TIME_PRECISION = 5e-4
"""Half the last decimal of the time in a frame's name: a frame within it of the name's time is the one."""
EXTRA = 'pip install "digitscan[video]"'


class VideoError(DigitscanError):
    """A video that cannot be read; the message says why, for the error column."""


@dataclass(frozen=True)
class Sampling:
    """Which frames of a video are read: every `every`-th, or about `fps` a second (at most one a frame)."""

    every: int = 1
    fps: float | None = None

    def __str__(self) -> str:
        return f"every {self.every}" if self.fps is None else f"{self.fps:g} a second"

    def pick(self, times: list[float]) -> list[float]:
        if self.fps is None:
            return times[:: self.every]
        picked: list[float] = []
        for t in times:
            if not picked or t >= picked[-1] + 1 / self.fps - 1e-6:
                picked.append(t)
        return picked


def is_video(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in SUFFIXES  # not Path(): this runs once an input


def frame_name(path: str, time: float) -> str:
    return f"{path}{MARK}{time:.3f}"


def split_name(name: str) -> tuple[str, float] | None:
    """(video path, time) of a frame's name, or None when `name` names no frame of a video."""
    path, mark, time = name.rpartition(MARK)
    if not mark or not is_video(path):
        return None
    try:
        return path, float(time)
    except ValueError:
        return None


def expand(paths: Iterable[str], sampling: Sampling) -> Iterator[str]:
    """Each path, a video's replaced by its sampled frames' names. A video that cannot be read stays
    as it is: decoding it then gives its row the reason (`why_unreadable`)."""
    for path in paths:
        if not is_video(path):
            yield path
            continue
        try:
            times = sampling.pick(frame_times(path))
        except VideoError:
            yield path
            continue
        yield from (frame_name(path, t) for t in times) if times else (path,)


def frame_times(path: str) -> list[float]:
    """The presentation times, in seconds, of the frames of the first video stream, in order."""
    with open_video(path) as container:
        stream = video_stream(container)
        try:
            times = sorted(t for t in map(seconds, container.demux(stream)) if t is not None)
        except av_errors() as exc:
            raise VideoError(f"cannot read video ({exc})") from None
    return times


def why_unreadable(path: str) -> str:
    """The reason a video gave no frames (for its row)."""
    try:
        return "video holds no frames" if not frame_times(path) else "video not read"
    except VideoError as exc:
        return str(exc)


def seconds(packet_or_frame: Any) -> float | None:
    """When a packet or frame is shown, in seconds (None when its stream does not say)."""
    pts = packet_or_frame.pts
    return None if pts is None else float(pts * packet_or_frame.time_base)


def read_frame(path: str, time: float) -> Image.Image:
    """The frame of `path` shown at `time` seconds, as an RGB image."""
    return _READER.frame(path, time)


class _Reader:
    """One open video per process, decoding forwards from where it last stopped."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.container: Any = None
        self.frames: Iterator[Any] = iter(())
        self.last = math.inf
        self.image: Image.Image | None = None
        """The frame last returned (at `last`): the loader may read a frame again, more finely."""

    def frame(self, path: str, time: float) -> Image.Image:
        if path == self.path and self.image is not None and abs(self.last - time) <= TIME_PRECISION:
            return self.image
        if path != self.path or time < self.last:
            self._seek(path, time)
        try:
            for frame in self.frames:
                at = seconds(frame)
                self.last = self.last if at is None else at
                if self.last >= time - TIME_PRECISION:
                    self.image = frame.to_image()
                    return self.image
        except av_errors() as exc:
            self.path = None
            raise VideoError(f"cannot decode video at {time:.3f} s ({exc})") from None
        self.path = None
        raise VideoError(f"video has no frame at {time:.3f} s")

    def _seek(self, path: str, time: float) -> None:
        if self.container is not None:
            self.container.close()
        self.path, self.container = None, open_video(path)
        stream = video_stream(self.container)
        try:
            if time > 0:
                self.container.seek(int(Fraction(time) / stream.time_base), stream=stream, backward=True)
        except av_errors() as exc:
            raise VideoError(f"cannot seek in video ({exc})") from None
        self.path, self.last, self.frames, self.image = path, -math.inf, self.container.decode(stream), None


_READER = _Reader()


def load_av() -> Any:
    try:
        import av
    except ImportError:
        raise VideoError(f"reading videos needs the video extra: {EXTRA}") from None
    return av


def av_errors() -> tuple[type[Exception], ...]:
    return (load_av().FFmpegError, ValueError, OSError)


def open_video(path: str) -> Any:
    av = load_av()
    try:
        return av.open(path)
    except FileNotFoundError:
        raise VideoError("file not found") from None
    except av_errors() as exc:
        raise VideoError(f"not a readable video ({exc})") from None


def video_stream(container: Any) -> Any:
    if not container.streams.video:
        raise VideoError("holds no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream
