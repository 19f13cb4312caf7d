"""`digitscan run`, top to bottom: paths -> Scorer (dataset, loader, model) -> writer -> summary."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from .defaults import RUN_BATCH
from .frames import save_frame
from .inputs import InputError, iter_paths
from .model import sha256
from .preprocess import Invert
from .report import Tally
from .scorer import Scorer
from .stopping import StopRequest
from .video import Sampling, expand, is_video
from .writers import (
    OutputError,
    Writer,
    already_scored,
    check_not_an_input,
    check_resume_settings,
    columns,
    save_settings,
)

if TYPE_CHECKING:
    from .ray_engine import RayScorer


@dataclass
class RunOptions:
    out: str = "-"
    fmt: str = "csv"
    recursive: bool = False
    batch_size: int = RUN_BATCH
    workers: int | None = None
    device: str = "auto"
    weights: Path | None = None
    invert: Invert = "auto"
    probs: bool = False
    quiet: bool = False
    resume: bool = False
    engine: str = "local"
    address: str | None = None
    actors: int = 1
    gpus_per_actor: float = 0.0
    frames: Path | None = None
    """Keep each 28 x 28 frame the model saw in this folder, for `review`."""
    gpu_decode: bool = False
    """Decode plain JPEGs and prepare them on the model's device (nvJPEG on a GPU)."""
    field: bool = False
    """Each image is a field of several digits: rows carry `text` (and `digits` in JSON and JSONL)."""
    digits: int | None = None
    """With fields: how many digits each holds, when the form says."""
    line_weights: Path | None = None
    """With fields: the line reader's archive (lines.py). [default: the shipped one]"""
    sampling: Sampling = Sampling()
    """Which frames of a video are read, each as one input."""


@dataclass
class RunOutcome:
    tally: Tally
    device: str
    seconds: float
    skipped: int = 0
    interrupted: bool = False


def make_scorer(opts: RunOptions) -> Scorer | RayScorer:
    """The local engine (DataLoader workers, one model), or Ray Data across a cluster."""
    if opts.engine == "ray":
        from .ray_engine import RayScorer

        if opts.frames is not None:
            raise OutputError("--frames works with the local engine only")
        return RayScorer(opts.weights, opts.batch_size, opts.invert, opts.address, opts.actors, opts.gpus_per_actor,
                         opts.digits, opts.field, opts.line_weights)
    return Scorer(opts.weights, opts.device, opts.batch_size, opts.workers, opts.invert,
                  keep_frames=opts.frames is not None, decode_on_device=opts.gpu_decode, field=opts.field,
                  digits=opts.digits, line_weights=opts.line_weights)


def make_frames_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot keep frames there ({exc.strerror or exc})") from None


def run(inputs: list[str], opts: RunOptions, on_batch: Callable[[int], None] | None = None) -> RunOutcome:
    """Score every image under `inputs` and write the results; rows already computed are always kept."""
    started = time.perf_counter()
    scorer = make_scorer(opts)
    if opts.frames is not None:
        make_frames_folder(opts.frames)
    found = list(iter_paths(inputs, opts.recursive))
    if not found:
        raise InputError("no images found in " + ", ".join(inputs))
    paths = list(expand(found, opts.sampling))
    settings: dict[str, Any] = {"columns": columns(opts.probs, opts.field), "weights": sha256(scorer.weights),
                                "invert": opts.invert}
    if opts.field:
        settings["digits"] = opts.digits
        settings["lines"] = sha256(scorer.line_weights) if scorer.line_weights is not None else None
    if any(is_video(p) for p in found):
        settings["frames"] = str(opts.sampling)
    check_not_an_input(opts.out, paths)
    if opts.resume:
        check_resume_settings(opts.out, opts.fmt, settings)
    save_settings(opts.out, settings)
    done = already_scored(opts.out, opts.fmt) if opts.resume else set()
    skip = [i for i, p in enumerate(paths) if p in done]
    outcome = RunOutcome(Tally(), scorer.description, 0.0, skipped=len(skip))
    writer = Writer(opts.out, opts.fmt, opts.probs, resume=opts.resume, field=opts.field)
    progress = tqdm(total=len(paths) - len(skip), unit="img", file=sys.stderr, dynamic_ncols=True,
                    disable=True if opts.quiet else None, leave=False)
    try:
        try:
            stop = StopRequest()
            with stop.installed():
                for batch in scorer.score(paths, skip):
                    writer.write(batch)
                    if opts.frames is not None:
                        for result in batch:
                            if result.frame is not None:
                                save_frame(opts.frames, result.path, result.frame)
                    outcome.tally.add(batch)
                    progress.update(len(batch))
                    if on_batch is not None:
                        on_batch(outcome.tally.total)
                    if stop.requested:
                        outcome.interrupted = True
                        break
        except KeyboardInterrupt:
            outcome.interrupted = True
        progress.close()
        writer.close()
    except BaseException:
        progress.close()
        partial = writer.abandon()
        if partial is not None:
            print(f"digitscan: {opts.out} is left as it was; the {outcome.tally.total:,} rows done are in {partial}",
                  file=sys.stderr)
        raise
    outcome.seconds = time.perf_counter() - started
    return outcome
