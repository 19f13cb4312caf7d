"""`digitscan review`: one self-contained HTML page of the readings a person should check.

results file (or images) -> rows to check, lowest confidence first -> each row's scan, the frame the
model saw and its ten probabilities (for a field of several digits: each digit's frame and reading)
-> review.html (images inline; the page's script, review.html in this package, lets a person type
the right digits and download them as corrections.csv).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .atomic import replacing
from .dataset import BLANK, ERROR, OK, prepared_items
from .decode import DecodeError, load_grey
from .evaluate import probabilities
from .frames import load_frame, to_uint8
from .inputs import iter_paths
from .model import default_weights, load_archive, sha256
from .preprocess import Invert
from .report import LOW_CONFIDENCE
from .scorer import Reading, Scorer
from .writers import PROB_COLUMNS, SUFFIXES, OutputError, read_rows, read_settings, record

THUMB = 128
"""Longest side, in pixels, of a scan as the page shows it..."""
FIELD_THUMB = 480
"""...and of a field of several digits."""
TOP = 3
"""How many of the ten probabilities a tile names."""


@dataclass
class ReviewOptions:
    """What `digitscan review` was asked to do; the CLI fills it from its flags."""

    sources: list[str]
    """One results file written by `run`, or images and folders to read now (then every image is shown)."""
    out: Path = Path("review.html")
    below: float = LOW_CONFIDENCE
    all: bool = False
    limit: int | None = None
    frames: Path | None = None
    """Where `run --frames` kept the frames; without it they are computed again from the scans."""
    weights: Path | None = None
    device: str = "auto"
    field: bool = False
    """Images read now are fields of several digits (a results file says so itself)."""
    digits: int | None = None
    """With `field`: how many digits each holds, when known (a results file records its own)."""


@dataclass
class ReviewOutcome:
    shown: int
    rows: int
    out: Path
    warning: str = ""


def is_results_file(sources: Sequence[str]) -> bool:
    return len(sources) == 1 and Path(sources[0]).suffix.lower() in SUFFIXES and os.path.isfile(sources[0])


def review(opts: ReviewOptions) -> ReviewOutcome:
    """Write the review page for `opts.sources`; return how many rows it shows, of how many."""
    frames: dict[str, np.ndarray] = {}
    readings: dict[str, list[Reading]] = {}
    invert: Invert = "auto"
    field, digits = opts.field or opts.digits is not None, opts.digits
    warning = ""
    from_results = is_results_file(opts.sources)
    if from_results:
        rows = read_rows(Path(opts.sources[0]))
        recorded = _recorded_settings(opts.sources[0])
        field = bool(rows) and "text" in rows[0] and "digit" not in rows[0]
        digits = recorded.get("digits") if isinstance(recorded.get("digits"), int) else None
        invert = "yes" if recorded.get("invert") == "yes" else "no" if recorded.get("invert") == "no" else "auto"
        if recorded.get("weights") not in (None, sha256(opts.weights or default_weights())) and rows \
                and rows[0].get(PROB_COLUMNS[0], "absent") == "absent":
            warning = (f"{opts.sources[0]} was read with other weights than these: the probabilities shown are "
                       "theirs; pass the run's --weights to see its own")
        base = Path(opts.sources[0]).parent
    else:
        rows, frames, readings = _read_now(opts)
        base = Path.cwd()
    every = opts.all or not from_results
    chosen = select(rows, opts.below, every, opts.limit)
    files = {row["path"]: _locate(row["path"], base) for row in chosen}
    wanted = [row["path"] for row in chosen
              if row["status"] == OK and row["path"] not in frames and row["path"] not in readings]
    if field:
        readings |= _fields_again([files[p] for p in wanted], wanted, invert, digits, opts)
        tiles = [_field_tile(row, files[row["path"]], readings.get(row["path"])) for row in chosen]
    else:
        if opts.frames is not None:
            frames |= {row["path"]: f for row in chosen if (f := load_frame(opts.frames, row["path"])) is not None}
            wanted = [p for p in wanted if p not in frames]
        frames |= _frames_again([files[p] for p in wanted], wanted, invert)
        probs = _probabilities(chosen, frames, opts)
        tiles = [_tile(row, files[row["path"]], frames.get(row["path"]), probs.get(row["path"])) for row in chosen]
    meta = {"id": hashlib.sha1(json.dumps([t["file"] for t in tiles]).encode("utf-8", "surrogateescape")).hexdigest(),
            "source": ", ".join(opts.sources), "rows": len(rows), "below": opts.below, "all": every, "field": field}
    write_page(opts.out, tiles, meta)
    return ReviewOutcome(len(tiles), len(rows), opts.out, warning)


def select(rows: list[dict[str, Any]], below: float, every: bool, limit: int | None) -> list[dict[str, Any]]:
    """The rows to check: readings below `below` (lowest first), then blanks, then errors; or every row."""
    if every:
        chosen = list(rows)
    else:
        chosen = [r for r in rows if r["status"] != OK or (r.get("confidence") or 0.0) < below]
    rank = {OK: 0, BLANK: 1, ERROR: 2}
    chosen.sort(key=lambda r: (rank.get(r["status"], 2), r.get("confidence") or 0.0))
    return chosen[:limit]


def _read_now(opts: ReviewOptions) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], dict[str, list[Reading]]]:
    """Read images as `run` would, keeping the frames (of fields: each digit's reading and frame)."""
    scorer = Scorer(opts.weights, opts.device, workers=0, keep_frames=True, field=opts.field, digits=opts.digits)
    rows, frames, readings = [], {}, {}
    for batch in scorer.score(list(iter_paths(opts.sources))):
        for result in batch:
            rows.append(record(result, probs=not scorer.field, field=scorer.field))
            if result.frame is not None:
                frames[result.path] = result.frame
            if result.digits is not None:
                readings[result.path] = result.digits
    return rows, frames, readings


def _recorded_settings(results: str) -> dict[str, Any]:
    """The settings the run recorded beside its results (--invert, the weights' sha256), if readable."""
    try:
        return read_settings(results) or {}
    except OutputError:
        return {}


def _locate(path: str, base: Path) -> str:
    """The absolute path of a scan named in a results file: as run saw it (relative to the current
    folder), else relative to the results file's folder."""
    here = Path(path)
    if here.is_absolute() or here.exists() or not (base / here).exists():
        return os.path.abspath(path)
    return os.path.abspath(base / here)


def _frames_again(files: list[str], names: list[str], invert: Invert) -> dict[str, np.ndarray]:
    """The frames the model saw, computed again from the scans (when run did not keep them)."""
    items = prepared_items(files, invert)
    return {name: to_uint8(item.pixels) for name, item in zip(names, items, strict=True) if item.pixels is not None}


def _fields_again(files: list[str], names: list[str], invert: Invert, digits: int | None,
                  opts: ReviewOptions) -> dict[str, list[Reading]]:
    """Each field's digits as the model reads them, with their frames, computed again from the scans."""
    scorer = Scorer(opts.weights, opts.device, workers=0, invert=invert, keep_frames=True, field=True, digits=digits)
    results = [r for batch in scorer.score(files) for r in batch]
    return {name: r.digits for name, r in zip(names, results, strict=True) if r.digits is not None}


def _probabilities(rows: list[dict[str, Any]], frames: dict[str, np.ndarray],
                   opts: ReviewOptions) -> dict[str, list[float]]:
    """Each row's ten probabilities: from the results (run --probs), else from the model on its frame."""
    probs = {r["path"]: [float(r[c]) for c in PROB_COLUMNS] for r in rows if r.get(PROB_COLUMNS[0]) is not None}
    missing = [r["path"] for r in rows if r["path"] in frames and r["path"] not in probs]
    if missing:
        cpu = torch.device("cpu")
        images = torch.from_numpy(np.stack([frames[p] for p in missing]))
        probs |= dict(zip(missing, probabilities(load_archive(opts.weights, cpu), images, cpu).tolist(), strict=True))
    return probs


def _tile(row: dict[str, Any], file: str, frame: np.ndarray | None, probs: list[float] | None) -> dict[str, Any]:
    scan, problem = _thumbnail(file, THUMB)
    return {"path": _text(row["path"]), "file": _text(file), "digit": row.get("digit"),
            "confidence": row.get("confidence"), "status": row["status"],
            "error": _text(row.get("error") or problem or ""), "probs": probs,
            "scan": scan, "frame": None if frame is None else _data_uri(Image.fromarray(frame, "L"))}


def _field_tile(row: dict[str, Any], file: str, readings: list[Reading] | None) -> dict[str, Any]:
    """A field's tile: its scan, its text, and each digit's frame and reading."""
    scan, problem = _thumbnail(file, FIELD_THUMB)
    digits = None if readings is None else [
        {"digit": r.digit, "confidence": r.confidence,
         "frame": None if r.frame is None else _data_uri(Image.fromarray(r.frame, "L"))} for r in readings]
    return {"path": _text(row["path"]), "file": _text(file), "text": row.get("text"),
            "confidence": row.get("confidence"), "status": row["status"],
            "error": _text(row.get("error") or problem or ""), "scan": scan, "digits": digits}


def _thumbnail(file: str, side: int) -> tuple[str | None, str | None]:
    """The scan as a small inline image (decoded with run's own safeguards), or why it cannot be shown."""
    try:
        grey = load_grey(file, side)
    except DecodeError as exc:
        return None, str(exc)
    except Exception as exc:  # a decoder bug costs this picture, not the page
        return None, f"cannot show: {type(exc).__name__}: {exc}"[:200]
    if grey.dtype != np.uint8:  # a deeper image, as levels in [0, 1]
        grey = (grey * 255).round().astype(np.uint8)
    img = Image.fromarray(grey, "L")
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    return _data_uri(img), None


def _data_uri(img: Image.Image) -> str:
    buffer = io.BytesIO()
    img.save(buffer, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _text(value: str) -> str:
    """A file name that is not valid UTF-8, as the escape --resume and the JSON writers use."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def write_page(out: Path, tiles: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """Fill the page template with the tiles, and write it atomically."""
    template = resources.files("digitscan").joinpath("review.html").read_text(encoding="utf-8")
    page = template.replace("__TILES__", _script_json(tiles)).replace("__META__", _script_json(meta))
    with replacing(out) as tmp:
        tmp.write_text(page, encoding="utf-8")


def _script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element."""
    return json.dumps(value, ensure_ascii=False).replace("</", "<\\/")
