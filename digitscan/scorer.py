"""Scoring: batches from the loader through the TorchScript model, one Result per input, in input order."""

from __future__ import annotations

import math
import os
import signal
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from .dataset import BLANK, ERROR, OK, Batch, Item, ScanDataset, make_loader
from .defaults import RUN_BATCH
from .devices import describe, pick_device
from .fields import Judge, cut_found, find_fields
from .frames import to_uint8
from .lines import LineReader, LineReading, line_images
from .model import WeightsError, default_weights, load_archive
from .ondevice import prepare_on_device
from .preprocess import Invert

LARGE_INPUT = 16 << 20
"""Bytes of input files above which even less than one batch is shared out among the loader workers."""


@dataclass
class Result:
    """The prediction for one input; `digit` and `confidence` are None unless status is ok."""

    path: str
    digit: int | None
    confidence: float | None
    inverted: bool | None
    status: str
    error: str = ""
    probs: list[float] | None = field(default=None, repr=False)
    frame: np.ndarray | None = field(default=None, repr=False)
    """The 28 x 28 frame the model saw (8-bit, ink white), when the Scorer keeps frames."""
    text: str | None = None
    """With fields (`Scorer(field=True)`): the digits read, left to right; `digit` is then None."""
    digits: list[Reading] | None = field(default=None, repr=False)
    """With fields: each digit read."""


@dataclass
class Reading:
    """One digit of a field: its value, confidence, box (left, top, right, bottom) in the image's
    pixels, its ten probabilities, and (with `Scorer(keep_frames=True)`) the frame the model saw."""

    digit: int
    confidence: float
    box: tuple[int, int, int, int]
    probs: list[float]
    frame: np.ndarray | None = field(default=None, repr=False)


def default_workers() -> int:
    """Loader processes: one per core, at most 8 (the model runs in the main process)."""
    return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class Scorer:
    """A loaded model on a device; `score` turns sources (paths or PIL images) into Results."""

    def __init__(self, weights: str | Path | None = None, device: str = "auto", batch_size: int = RUN_BATCH,
                 workers: int | None = None, invert: Invert = "auto", keep_frames: bool = False,
                 decode_on_device: bool = False, field: bool = False, digits: int | None = None,
                 line_weights: str | Path | None = None, segment_only: bool = False) -> None:
        self.device = pick_device(device)
        self.decode_on_device = decode_on_device
        """Plain JPEGs decoded and prepared on the model's device (ondevice.py), not in the loader workers."""
        self.field = field or digits is not None
        """Each image is a field of several digits (fields.py); `digits`: how many, when known."""
        self.digits = digits
        self.weights = default_weights() if weights is None else Path(weights)
        self.model = load_archive(self.weights, self.device)
        self.lines = None if segment_only or not self.field else \
            LineReader(None if line_weights is None else Path(line_weights), self.device)
        """Fields are read whole by the line reader too (lines.py), unless `segment_only`."""
        self.batch_size = batch_size
        self.workers = default_workers() if workers is None else workers
        self.invert = invert
        self.keep_frames = keep_frames
        self.description = f"{describe(self.device)}, {self.workers} loader worker(s)"

    @property
    def line_weights(self) -> Path | None:
        """The line reader's archive; None when fields are cut only (or images are single digits)."""
        return self.lines.weights if self.lines is not None else None

    def score(self, sources: Sequence[str | Image.Image], skip: Iterable[int] = ()) -> Iterator[list[Result]]:
        """Yield batches of Results, one per source, in order, leaving out the indices in `skip`.

        If a loader process dies (a decoder crash), the batch it held is retried one file at a
        time in a single worker; the file that kills it gets an error row and the run goes on.
        """
        skipped = set(skip)
        todo = [i for i in range(len(sources)) if i not in skipped]
        dataset = ScanDataset(sources, self.invert, hand_over=self.decode_on_device and not self.field,
                              field=self.field)
        workers, batch_size = self._plan(sources, todo)
        threads = torch.get_num_threads()
        if self.device.type == "cpu" and workers:
            torch.set_num_threads(max(1, threads - workers))  # the loader workers need the cores too
        try:
            yield from self._score(dataset, sources, todo, workers, batch_size)
        finally:
            torch.set_num_threads(threads)

    def _plan(self, sources: Sequence[str | Image.Image], todo: list[int]) -> tuple[int, int]:
        """Loader processes and batch size. Under one batch of images, workers pay for their start-up
        only when the files are large (photos): then the images are shared out between them."""
        if len(todo) > self.batch_size:
            return self.workers, self.batch_size
        if self.workers and _file_bytes(sources[i] for i in todo) > LARGE_INPUT:
            workers = min(self.workers, len(todo))
            return workers, -(-len(todo) // workers)
        return 0, self.batch_size

    def _score(self, dataset: ScanDataset, sources: Sequence[str | Image.Image], todo: list[int],
               workers: int, batch_size: int) -> Iterator[list[Result]]:
        isolating = False
        while todo:
            chunk = todo[:batch_size] if isolating else todo
            loader = make_loader(dataset, 1 if isolating else batch_size, 1 if isolating else workers, indices=chunk,
                                 pin_memory=self.device.type == "cuda", prefetch=1 if isolating else 4)
            done = 0
            try:
                for batch in _synchronous(loader):
                    done += len(batch.indices)
                    yield self._results(batch, sources)
            except RuntimeError as exc:
                if "DataLoader worker" not in str(exc):
                    raise
                if isolating:
                    culprit = todo[done]
                    yield [Result(_name(sources[culprit], culprit), None, None, None, ERROR,
                                  "decoder crashed on this file (its worker process died)")]
                    done += 1
                todo, isolating = todo[done:], not isolating
                continue
            todo, isolating = todo[len(chunk):], False

    def _prepare_handed(self, batch: Batch, sources: Sequence[str | Image.Image]) -> Batch:
        """The batch with the JPEGs handed over as bytes decoded and prepared on the device; should its
        decoder refuse them, each of those files is read on the CPU instead."""
        positions = [pos for pos, _ in batch.encoded]
        indices = [batch.items[pos].index for pos in positions]
        prepared = prepare_on_device([data for _, data in batch.encoded], self.device, self.invert)
        if prepared is None:
            done = ScanDataset(sources, self.invert).__getitems__(indices)
            frames = [torch.from_numpy(item.pixels) for item in done if item.pixels is not None]
            pixels = torch.stack(frames) if frames else torch.empty(0, *batch.pixels.shape[2:])
        else:
            done = [Item(i, None, bool(inv), BLANK if blank else OK)
                    for i, inv, blank in zip(indices, prepared.inverted.tolist(), prepared.blank.tolist(), strict=True)]
            pixels = prepared.pixels[~prepared.blank]
        items = list(batch.items)
        for pos, item in zip(positions, done, strict=True):
            items[pos] = Item(item.index, None, item.inverted, item.status, item.error)
        ok = batch.ok + [pos for pos, item in zip(positions, done, strict=True) if item.status == OK]
        pixels = torch.cat([batch.pixels.to(self.device), pixels.unsqueeze(1).to(self.device)])
        return Batch(batch.indices, pixels, ok, items)

    def _probabilities(self, frames: torch.Tensor) -> torch.Tensor:
        return frame_probabilities(self.model, frames, self.device, self.weights)

    @torch.inference_mode()
    def _field_results(self, batch: Batch, sources: Sequence[str | Image.Image]) -> list[Result]:
        fields = read_fields(batch.greys, self.invert, self.digits, self._probabilities, self.lines, self.keep_frames)
        read = dict(zip(batch.ok, fields, strict=True))
        results = []
        for pos, item in enumerate(batch.items):
            name = _name(sources[item.index], item.index)
            if pos in read:
                results.append(field_result(name, *read[pos]))
            else:
                results.append(Result(name, None, None, item.inverted, item.status, item.error))
        return results

    @torch.inference_mode()
    def _results(self, batch: Batch, sources: Sequence[str | Image.Image]) -> list[Result]:
        if self.field:
            return self._field_results(batch, sources)
        if batch.encoded:
            batch = self._prepare_handed(batch, sources)
        probs: list[list[float]] = []
        results = []
        if batch.ok:
            x = batch.pixels.to(self.device, non_blocking=True)
            scores = checked_probabilities(self.model, x, self.weights)
            conf, digit = scores.max(dim=1)
            # Python lists once per batch: indexing tensors costs microseconds an element.
            probs, confs, digits = scores.tolist(), conf.tolist(), digit.tolist()
        row = {pos: n for n, pos in enumerate(batch.ok)}
        for pos, item in enumerate(batch.items):
            name = _name(sources[item.index], item.index)
            if item.status == OK and probs:
                n = row[pos]
                results.append(Result(name, digits[n], confs[n], item.inverted, OK, probs=probs[n],
                                      frame=to_uint8(batch.pixels[n].cpu()) if self.keep_frames else None))
            else:
                results.append(Result(name, None, None, item.inverted, item.status, item.error))
        return results


def read_fields(greys: Sequence[tuple[np.ndarray, float]], invert: Invert, digits: int | None,
                probabilities: Judge, lines: LineReader | None,
                keep_frames: bool = False) -> list[tuple[bool, list[Reading] | None, float | None]]:
    """Each decoded field (with its scale, as `ScanDataset(field=True)` gives it) read: (inverted, its
    readings and the probability that they are right (`_confidence`), or None and None when blank).

    The line reader (`lines`) reads each field whole; the segmenter (fields.py) cuts it into as many
    digits as it holds (`digits`; else as many as the line reader read), the model judging doubtful cuts
    and reading each digit; where both read as many digits, the surer text is kept (`_surer`), its digits
    in the segmenter's boxes.
    """
    found = find_fields([grey for grey, _ in greys], invert)
    inked = [f.ink for f in found if f.ink is not None]
    read = iter(lines.read(line_images(inked)) if lines is not None and inked else [])
    whole = [next(read) if f.ink is not None and lines is not None else None for f in found]
    counts = [digits or (len(w.text) if w is not None and w.text else None) for w in whole]
    cuts = cut_found(found, counts, judge=probabilities)
    out: list[tuple[bool, list[Reading] | None, float | None]] = []
    for cut, (_, scale), line in zip(cuts, greys, whole, strict=True):
        if cut.pixels is None or cut.probs is None:
            out.append((cut.inverted, None, None))
            continue
        readings = []
        for k, ((left, top, right, bottom), p) in enumerate(zip(cut.boxes, cut.probs.tolist(), strict=True)):
            best = max(range(10), key=p.__getitem__)
            box = (round(left * scale), round(top * scale), round(right * scale), round(bottom * scale))
            frame = to_uint8(cut.pixels[k]) if keep_frames else None
            readings.append(Reading(best, p[best], box, p, frame))
        chosen = _surer(readings, line) if line is not None else readings
        out.append((cut.inverted, chosen, _confidence(chosen, line)))
    return out


def _confidence(readings: list[Reading], line: LineReading | None) -> float:
    """The probability that a field's readings are right: the product of their confidences, or, where
    the line reader read another text, the geometric mean of that product and the line reader's doubt
    in its own text (where the two differ, each is right about half the time: bench/fields.py)."""
    product = math.prod(r.confidence for r in readings)
    if line is None or line.text == field_text(readings):
        return product
    return math.sqrt(product * (1 - line.confidence))


def _surer(readings: list[Reading], line: LineReading) -> list[Reading]:
    """The segmenter's readings, or the line reader's digits in their boxes where it read as many digits,
    differently, and is surer of its text than the segmenter is of its own (the product of its digits')."""
    if len(line.text) != len(readings) or line.text == field_text(readings) \
            or line.confidence <= math.prod(r.confidence for r in readings):
        return readings
    return [Reading(int(d), max(p), r.box, p, r.frame) for d, p, r in zip(line.text, line.probs, readings, strict=True)]


def field_result(name: str, inverted: bool, readings: list[Reading] | None, confidence: float | None) -> Result:
    """The row of a field: its digits as text, and the probability that they are right (`read_fields`)."""
    if readings is None or confidence is None:
        return Result(name, None, None, inverted, BLANK)
    return Result(name, None, confidence, inverted, OK, text=field_text(readings), digits=readings)


def field_text(readings: list[Reading]) -> str:
    """A field's digits as text, left to right."""
    return "".join(str(r.digit) for r in readings)


def checked_probabilities(model: torch.nn.Module | torch.jit.ScriptModule, x: torch.Tensor,
                          weights: Path) -> torch.Tensor:
    """The model's ten probabilities, on the CPU, for a batch x (N x 1 x 28 x 28, on the model's
    device), its scores checked first (`check_scores`)."""
    return torch.softmax(check_scores(model(x), len(x), weights).float(), dim=1).cpu()


def frame_probabilities(model: torch.nn.Module | torch.jit.ScriptModule, frames: torch.Tensor, device: torch.device,
                        weights: Path) -> torch.Tensor:
    """The model's ten probabilities, on the CPU, for N x 28 x 28 normalised frames (the pieces of
    fields), RUN_BATCH at a time: thousands at once run slower on a CPU than in batches."""
    if not len(frames):
        return torch.empty(0, 10)
    return torch.cat([checked_probabilities(model, chunk.unsqueeze(1).to(device), weights)
                      for chunk in frames.split(RUN_BATCH)])


def check_scores(scores: object, n: int, weights: Path) -> torch.Tensor:
    """The model's output for a batch of n, if it is n x 10 finite scores; else a set-up error, never a row."""
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (n, 10):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise WeightsError(f"{weights}: the model returned {shape} for a batch of {n} images, not {n} x 10 scores")
    if not bool(torch.isfinite(scores).all()):
        raise WeightsError(f"{weights}: the model returned NaN or infinite scores")
    return scores


def _file_bytes(sources: Iterable[str | Image.Image]) -> int:
    total = 0
    for source in sources:
        try:
            total += os.stat(source).st_size if isinstance(source, str) else 0
        except OSError:
            pass  # reported by the decoder, in its row
    return total


def _synchronous(loader: DataLoader) -> Iterator[Batch]:
    """Iterate a loader so that a dead worker raises from the loader, never from a signal handler.

    torch reports dead workers from a SIGCHLD handler, which can raise in the middle of whatever the
    main thread is doing (writing rows, say). With SIGCHLD at its default, the loader's own check
    (it polls its workers' liveness while waiting for a batch) raises the same error, but here.
    """
    iterator = iter(loader)
    if loader.num_workers and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    yield from iterator


def _name(source: str | Image.Image, index: int) -> str:
    return source if isinstance(source, str) else f"<image {index}>"


def predict(sources: Sequence[str | Path | Image.Image], weights: str | Path | None = None,
            device: str = "auto", batch_size: int = RUN_BATCH, workers: int = 0,
            invert: Invert = "auto") -> list[Result]:
    """Score paths or PIL images with the shipped (or given) weights; one Result per source, in order.

    >>> [r.digit for r in predict(["examples/scans/7_clean.png"])]  # doctest: +SKIP
    [7]
    """
    items = [str(s) if isinstance(s, Path) else s for s in sources]
    scorer = Scorer(weights, device, batch_size, workers, invert)
    return [result for batch in scorer.score(items) for result in batch]

