"""Live reading, `digitscan watch`: frames from a camera, a video file or a stream, read a few at a time
on a worker thread, one JSONL line on standard output each time the reading changes, and optionally
a window of the frame, the digit's box and the reading (window.py).

Three threads: the capture thread decodes frames into a queue (a live source's oldest frames are
dropped when the reader falls behind; a file's are all read); the reader thread takes what is queued
(up to `BATCH` frames), prepares it as `run` prepares photos and scores it in one batch; the main
thread waits, or runs the window. A stop signal, q in the window or the end of a file ends all three
and releases the camera.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .dataset import OK, collate, prepared_items
from .defaults import WATCH_STEADY
from .devices import pick_device
from .errors import DigitscanError
from .model import default_weights, load_archive
from .preprocess import Invert
from .scorer import frame_probabilities
from .stopping import StopRequest
from .video import VideoError, av_errors, load_av, open_video, seconds, video_stream

BATCH = 8
"""At most this many frames are read together."""
QUEUED = 2 * BATCH
"""Frames waiting for the reader; beyond it a live source drops its oldest, a file waits."""
POLL_SECONDS = 0.1
"""How long a thread waits on the queue before it looks at the stop flag again."""
CAMERAS = {"linux": ("v4l2", "/dev/video{}"), "darwin": ("avfoundation", "{}")}
"""How FFmpeg opens camera N, by platform: its input format and device name."""


class WatchError(DigitscanError):
    """Nothing to watch: no such camera, file or stream."""


@dataclass(frozen=True)
class WatchOptions:
    """What `digitscan watch` reads and how."""

    source: str = "0"
    """A camera index, a video file or a stream URL."""
    weights: Path | None = None
    device: str = "auto"
    invert: Invert = "auto"
    steady: int = WATCH_STEADY
    paced: bool = False
    """Read a file at its own speed, as a person watching it would see it, rather than as fast as it decodes."""


@dataclass(frozen=True)
class Seen:
    """The reading of one frame; `box` (left, top, right, bottom) is the digit's, in the frame's pixels."""

    time: float
    digit: int | None
    confidence: float | None
    inverted: bool | None
    status: str
    box: tuple[int, int, int, int] | None = None
    error: str = ""

    def row(self) -> dict[str, Any]:
        """The JSONL line's fields."""
        row: dict[str, Any] = {"time": round(self.time, 3), "digit": self.digit,
                               "confidence": None if self.confidence is None else round(self.confidence, 4),
                               "inverted": self.inverted, "status": self.status}
        return row | ({"error": self.error} if self.error else {})


class Changes:
    """Turns the frames' readings into changes: a reading (digit and status) is reported once it has
    held for `steady` frames in a row, with the time and confidence of the first of them."""

    def __init__(self, steady: int) -> None:
        self.steady = steady
        self.shown: tuple[str, int | None] | None = None
        self.first: Seen | None = None
        self.count = 0

    def see(self, seen: Seen) -> Seen | None:
        key = (seen.status, seen.digit)
        if key == self.shown:
            self.first, self.count = None, 0
            return None
        if self.first is None or key != (self.first.status, self.first.digit):
            self.first, self.count = seen, 0
        self.count += 1
        if self.count < self.steady:
            return None
        self.shown, first = key, self.first
        self.first, self.count = None, 0
        return first


@dataclass
class Latest:
    """What the window shows: the newest frame and the newest reading, shared between threads."""

    frame: Image.Image | None = None
    seen: Seen | None = None


@dataclass(frozen=True)
class Source:
    """An open video source; `live` sources (cameras, live streams) drop frames the reader cannot keep up with."""

    container: Any
    live: bool
    name: str


def open_source(source: str) -> Source:
    """Open a camera (an index), a video file or a stream URL; WatchError or VideoError says why not."""
    if source.isdigit():
        if sys.platform not in CAMERAS:
            raise WatchError(f"camera {source}: camera indices work on Linux and macOS; give a video file or "
                             "a stream URL")
        fmt, name = CAMERAS[sys.platform]
        device = name.format(source)
        av = load_av()  # VideoError naming the extra
        try:
            return Source(av.open(device, format=fmt), True, f"camera {source}")
        except av_errors() as exc:
            raise WatchError(f"no camera {source} ({device}: {exc})") from None
    if "://" not in source and not Path(source).exists():
        raise WatchError(f"{source}: no such file (and not a camera index or a stream URL)")
    try:
        container = open_video(source)
    except VideoError as exc:
        raise WatchError(f"{source}: {exc}") from None
    # A stream without a duration is live (a camera's RTSP feed); a URL to a file is read whole.
    return Source(container, "://" in source and container.duration is None, source)


Window = Callable[[Latest, Callable[[], bool]], None]
"""Shows what `Latest` holds on the main thread until the person closes it or the callable says the
watch has ended."""


def watch(opts: WatchOptions, emit: Callable[[Seen], None], window: Window | None = None) -> bool:
    """Read `opts.source` until it ends or a stop; `emit` each change of reading (on the reader thread).
    `window`, when given, runs until it is closed, which ends the watch. Returns whether a stop signal
    ended it."""
    device = pick_device(opts.device)
    weights = default_weights() if opts.weights is None else opts.weights
    model = load_archive(weights, device)
    source = open_source(opts.source)  # last: nothing may fail between opening a camera and the threads
    frames: queue.Queue[tuple[float, Image.Image] | None] = queue.Queue(QUEUED)
    latest, done, stop = Latest(), threading.Event(), StopRequest()
    failure: list[BaseException] = []

    def capture() -> None:
        try:
            for item in _decoded(source, opts.paced, done):
                latest.frame = item[1]
                _put(frames, item, source.live, done)
        except BaseException as exc:  # handed to the main thread, which reports it
            failure.append(exc)
        finally:
            source.container.close()
            _put(frames, None, False, done)

    def read() -> None:
        changes = Changes(opts.steady)
        try:
            for batch in _batches(frames, done):
                for seen in _read(batch, model, weights, device, opts.invert):
                    latest.seen = seen
                    change = changes.see(seen)
                    if change is not None:
                        emit(change)
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    threads = [threading.Thread(target=capture, name="capture", daemon=True),
               threading.Thread(target=read, name="read", daemon=True)]
    with stop.installed():
        for thread in threads:
            thread.start()
        try:
            if window is not None:
                window(latest, lambda: done.is_set() or stop.requested)
            while not done.is_set() and not stop.requested:
                done.wait(POLL_SECONDS)
        finally:
            done.set()
            for thread in threads:
                thread.join()
    if failure:
        raise failure[0]
    return stop.requested


def _decoded(source: Source, paced: bool, done: threading.Event) -> Iterator[tuple[float, Image.Image]]:
    """The source's frames as (time in seconds, RGB image): a file's times as `run` names its frames, a
    live source's from its first frame. `paced`: a file's frames no faster than their times."""
    stream = video_stream(source.container)
    first: float | None = None
    began = time.monotonic()
    try:
        for frame in source.container.decode(stream):
            if done.is_set():
                return
            shown = seconds(frame)
            at = 0.0 if shown is None else shown
            first = at if first is None else first
            if source.live:
                at -= first
            elif paced:
                done.wait(max(0.0, began + at - first - time.monotonic()))
            yield at, frame.to_image()
    except av_errors() as exc:
        raise WatchError(f"{source.name}: cannot decode ({exc})") from None


def _put(frames: queue.Queue[tuple[float, Image.Image] | None], item: tuple[float, Image.Image] | None,
         live: bool, done: threading.Event) -> None:
    while not done.is_set():
        try:
            frames.put(item, timeout=POLL_SECONDS)
            return
        except queue.Full:
            if live:
                try:
                    frames.get_nowait()  # the oldest frame gives way
                except queue.Empty:
                    pass


def _batches(frames: queue.Queue[tuple[float, Image.Image] | None],
             done: threading.Event) -> Iterator[list[tuple[float, Image.Image]]]:
    """What is queued, up to BATCH frames at a time, until the capture's end marker."""
    while not done.is_set():
        try:
            first = frames.get(timeout=POLL_SECONDS)
        except queue.Empty:
            continue
        batch = [] if first is None else [first]
        ended = first is None
        while not ended and len(batch) < BATCH:
            try:
                item = frames.get_nowait()
            except queue.Empty:
                break
            ended = item is None
            batch += [] if item is None else [item]
        if batch:
            yield batch
        if ended:
            return


@torch.inference_mode()
def _read(batch: list[tuple[float, Image.Image]], model: torch.nn.Module | torch.jit.ScriptModule,
          weights: Path, device: torch.device, invert: Invert) -> list[Seen]:
    """Each frame decoded and prepared as `run` prepares a photo (`prepared_items`), then scored in one batch."""
    items = list(prepared_items([image for _, image in batch], invert, batch_size=len(batch)))
    collated = collate(items)
    confidences, digits = frame_probabilities(model, collated.pixels[:, 0], device, weights).max(dim=1)
    read = dict(zip(collated.ok, zip(digits.tolist(), confidences.tolist(), strict=True), strict=True))
    seen = []
    for k, ((at, image), item) in enumerate(zip(batch, items, strict=True)):
        if k not in read or item.box is None or item.decoded is None:
            seen.append(Seen(at, None, None, item.inverted, item.status, error=item.error))
            continue
        scale = image.width / item.decoded[1]  # the frame may have been decoded reduced
        left, top, right, bottom = (round(v * scale) for v in item.box)
        seen.append(Seen(at, *read[k], item.inverted, OK, (left, top, right, bottom)))
    return seen
