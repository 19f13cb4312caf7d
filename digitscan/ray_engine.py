"""`digitscan run --engine ray`: the same rows as the local engine, computed with Ray Data.

Decoding and preprocessing run as parallel Ray tasks (the same ScanDataset code as the local
engine); the TorchScript model runs in a pool of actors, loaded once per actor; results come back
in input order to the same writers.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from .dataset import OK, ScanDataset
from .defaults import LINES_NAME, RUN_BATCH
from .errors import DigitscanError
from .lines import LineReader, load_line_archive
from .model import WeightsError, default_weights, load_archive
from .preprocess import FRAME, Invert
from .scorer import Reading, Result, checked_probabilities, field_result, frame_probabilities, read_fields


class EngineUnavailable(DigitscanError):
    """Ray is not installed, or the cluster cannot be reached."""


def _prepare(batch: dict[str, np.ndarray], invert: str, field: bool) -> dict[str, np.ndarray]:
    """Ray task: decode and preprocess a batch of paths exactly as the local engine does (fields
    are only decoded: the model's actor cuts them, judging the cuts)."""
    dataset = ScanDataset([str(p) for p in batch["path"]], invert, field=field)  # type: ignore[arg-type]
    items = dataset.__getitems__(range(len(dataset)))
    blank = np.zeros((FRAME, FRAME), dtype=np.float32)
    out = {
        "index": batch["index"],
        "status": np.array([it.status for it in items], dtype=object),
        "inverted": np.array([-1 if it.inverted is None else int(it.inverted) for it in items], dtype=np.int8),
        "error": np.array([it.error for it in items], dtype=object),
    }
    if field:
        out["grey"] = np.empty(len(items), dtype=object)  # one array a field, of its own size
        for k, it in enumerate(items):
            out["grey"][k] = it.grey[0] if it.grey is not None else np.zeros((1, 1), dtype=np.uint8)
        out["scale"] = np.array([it.grey[1] if it.grey is not None else 1.0 for it in items])
    else:
        out["pixels"] = np.stack([blank if it.pixels is None else it.pixels for it in items])
    return out


class _Model:
    """Ray actor: loads the archive once, scores the ok images of each batch."""

    def __init__(self, weights: str, invert: Invert, digits: int | None, lines: str | None) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.weights = Path(weights)
        self.model = load_archive(self.weights, self.device)
        self.lines = LineReader(Path(lines), self.device) if lines is not None else None
        self.invert, self.digits = invert, digits

    def _probabilities(self, frames: torch.Tensor) -> torch.Tensor:
        return frame_probabilities(self.model, frames, self.device, self.weights)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "grey" in batch:
            return self._fields(batch)
        ok = batch["status"] == OK
        probs = np.full((len(ok), 10), np.nan, dtype=np.float32)
        fatal = ""  # our own error goes back as data: Ray would wrap it beyond recognition
        if ok.any():
            x = torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok])).unsqueeze(1).to(self.device)
            with torch.inference_mode():
                try:
                    probs[ok] = checked_probabilities(self.model, x, self.weights).numpy()
                except DigitscanError as exc:
                    fatal = str(exc)
        return {key: batch[key] for key in ("index", "status", "inverted", "error")} | {
            "probs": probs, "fatal": np.full(len(ok), fatal, dtype=object)}


    @torch.inference_mode()
    def _fields(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Cut and read the ok fields; each row's readings go back as JSON (None: blank or not ok)."""
        ok = np.nonzero(batch["status"] == OK)[0]
        read = np.full(len(batch["status"]), None, dtype=object)
        fatal = ""
        try:
            greys = [(batch["grey"][k], float(batch["scale"][k])) for k in ok]
            fields = read_fields(greys, self.invert, self.digits, self._probabilities, self.lines)
            for k, (inverted, readings, confidence) in zip(ok, fields, strict=True):
                read[k] = json.dumps({"inverted": inverted, "confidence": confidence, "digits": None if readings is None
                                      else [(r.digit, r.confidence, r.box, r.probs) for r in readings]})
        except DigitscanError as exc:
            fatal = str(exc)
        return {key: batch[key] for key in ("index", "status", "inverted", "error")} | {
            "read": read, "fatal": np.full(len(read), fatal, dtype=object)}


class RayScorer:
    """Scores sources on a Ray cluster (a local one without `address`); same interface as Scorer."""

    def __init__(self, weights: str | Path | None = None, batch_size: int = RUN_BATCH, invert: Invert = "auto",
                 address: str | None = None, actors: int = 1, gpus_per_actor: float = 0.0,
                 digits: int | None = None, field: bool = False, line_weights: str | Path | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise EngineUnavailable("--engine ray needs Ray: pip install 'digitscan[ray]'") from None
        self.weights = Path(weights) if weights is not None else default_weights()
        load_archive(self.weights)  # a bad archive fails here, before the cluster is started
        self.batch_size, self.invert = batch_size, invert
        self.actors, self.gpus_per_actor = actors, gpus_per_actor
        self.field, self.digits = field or digits is not None, digits
        self.line_weights = (Path(line_weights) if line_weights is not None else default_weights(LINES_NAME)) \
            if self.field else None
        if self.line_weights is not None:
            load_line_archive(self.line_weights)
        try:
            if ray.is_initialized():
                pass  # the caller set Ray up (a notebook, a test): use it as it is
            elif address is None:
                ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR, configure_logging=True)
            else:
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise EngineUnavailable(f"cannot join Ray at {address}: {str(exc).splitlines()[0]}") from None
        cpus = int(ray.cluster_resources().get("CPU", 0))
        self.description = f"ray ({address or 'local'}: {cpus} CPUs, {actors} model actor(s))"

    def score(self, sources: Sequence[str], skip: Iterable[int] = ()) -> Iterator[list[Result]]:
        """Yield batches of Results, one per source, in order, leaving out the indices in `skip`."""
        import ray

        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        skipped = set(skip)
        items = [{"index": i, "path": sources[i]} for i in range(len(sources)) if i not in skipped]
        if not items:
            return
        ds: ray.data.Dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items) // self.batch_size))
        ds = ds.map_batches(functools.partial(_prepare, invert=self.invert, field=self.field),
                            batch_size=self.batch_size, batch_format="numpy")
        lines = None if self.line_weights is None else str(self.line_weights)
        ds = ds.map_batches(_Model, batch_size=self.batch_size, batch_format="numpy", concurrency=self.actors,
                            num_cpus=0.25, num_gpus=self.gpus_per_actor,
                            fn_constructor_kwargs={"weights": str(self.weights), "invert": self.invert,
                                                   "digits": self.digits, "lines": lines})
        for batch in ds.iter_batches(batch_size=self.batch_size, batch_format="numpy"):
            if any(batch["fatal"]):
                raise WeightsError(next(str(message) for message in batch["fatal"] if message))
            yield [self._result(sources, batch, n) for n in range(len(batch["index"]))]

    @staticmethod
    def _result(sources: Sequence[str], batch: dict[str, np.ndarray], n: int) -> Result:
        path = sources[int(batch["index"][n])]
        inverted = None if batch["inverted"][n] < 0 else bool(batch["inverted"][n])
        if batch["status"][n] != OK:
            return Result(path, None, None, inverted, str(batch["status"][n]), str(batch["error"][n]))
        if "read" in batch:
            read = json.loads(batch["read"][n])
            digits = read["digits"]
            return field_result(path, read["inverted"], None if digits is None else [
                Reading(digit, confidence, tuple(box), probs) for digit, confidence, box, probs in digits],
                read["confidence"])
        probs = batch["probs"][n]
        digit = int(probs.argmax())
        return Result(path, digit, float(probs[digit]), inverted, OK, probs=probs.tolist())
