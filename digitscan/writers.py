"""Writing results as CSV, JSON or JSONL: files atomically (temp + rename), JSONL and stdout as they come."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from .atomic import write_json_atomic
from .errors import DigitscanError
from .scorer import Result

COLUMNS = ["path", "digit", "confidence", "inverted", "status", "error"]
PROB_COLUMNS = [f"p{d}" for d in range(10)]
SUFFIXES = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
SETTINGS_SUFFIX = ".settings.json"
"""Beside a results file, the settings that shaped its rows: `--resume` must not change them."""
SETTING_FLAGS = {"columns": "--probs", "weights": "--weights", "invert": "--invert"}


class OutputError(DigitscanError):
    """An output that cannot be written or resumed (found before work starts)."""


def pick_format(out: str, fmt: str | None) -> str:
    """--format wins; else the extension of --out; else CSV."""
    if fmt:
        return fmt
    return SUFFIXES.get(Path(out).suffix.lower(), "csv") if out != "-" else "csv"


def check_output(out: str, fmt: str, resume: bool) -> None:
    if out == "-":
        if resume:
            raise OutputError("--resume needs --out FILE")
        return
    path = Path(out)
    if path.is_dir():
        raise OutputError(f"{out}: is a folder; --out takes a file name")
    if not path.parent.is_dir():
        raise OutputError(f"{out}: output folder {str(path.parent)!r} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise OutputError(f"{out}: output folder is not writable")
    if resume and fmt == "json":
        raise OutputError("--resume works with CSV and JSONL outputs, not JSON")


def settings_file(out: str) -> Path:
    return Path(out).with_name(Path(out).name + SETTINGS_SUFFIX)


def columns(probs: bool) -> list[str]:
    return COLUMNS + (PROB_COLUMNS if probs else [])


def save_settings(out: str, settings: dict[str, Any]) -> None:
    """Record `settings` (columns, weights' sha256, invert) beside a results file."""
    if out != "-":
        write_json_atomic(settings_file(out), settings)


def check_resume_settings(out: str, fmt: str, settings: dict[str, Any]) -> None:
    """Refuse to continue `out` when this run's rows would differ from its own: other columns, weights or
    polarity. A file without a record beside it is checked for its columns only."""
    path = Path(out)
    if out == "-" or not path.exists() or not path.stat().st_size:
        return
    try:
        saved = json.loads(settings_file(out).read_text(encoding="utf-8"))
    except FileNotFoundError:
        saved = {"columns": _columns_in(path, fmt)}
    except (OSError, ValueError):
        raise OutputError(f"{settings_file(out)}: unreadable; remove it to resume without checking") from None
    differ = [flag for key, flag in SETTING_FLAGS.items() if key in saved and saved[key] != settings[key]]
    if differ:
        raise OutputError(f"{out}: written with other {', '.join(differ)} settings than this run; --resume "
                          "must keep them (or write to a new file)")


def _columns_in(path: Path, fmt: str) -> list[str]:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        if fmt == "csv":
            return next(csv.reader(f), [])
        try:
            return list(json.loads(f.readline()))
        except ValueError:
            raise OutputError(f"{path}: not a digitscan JSONL file (cannot resume from it)") from None


def record(result: Result, probs: bool) -> dict[str, Any]:
    """The JSON object for one result (None where a CSV cell is empty)."""
    rec: dict[str, Any] = {"path": result.path, "digit": result.digit,
                           "confidence": None if result.confidence is None else round(result.confidence, 6),
                           "inverted": result.inverted, "status": result.status, "error": result.error or None}
    if probs:
        values: list[float | None] = list(result.probs) if result.probs else [None] * 10
        rec.update({name: None if p is None else round(p, 6) for name, p in zip(PROB_COLUMNS, values, strict=True)})
    return rec


def _csv_cells(rec: dict[str, Any]) -> list[str]:
    cells = []
    for value in rec.values():
        if value is None:
            cells.append("")
        elif isinstance(value, bool):
            cells.append("true" if value else "false")
        elif isinstance(value, float):
            cells.append(f"{value:.6f}")
        else:
            cells.append(str(value))
    return cells


class Writer:
    """Writes records to a file or stdout. Files other than JSONL go to a temporary file that
    `close` renames over the target, so a reader never sees a half-written CSV or JSON."""

    def __init__(self, out: str, fmt: str, probs: bool = False, resume: bool = False) -> None:
        self.fmt, self.probs, self.count = fmt, probs, 0
        self._target = None if out == "-" else Path(out)
        self._tmp: Path | None = None
        appending = resume and self._target is not None and self._target.exists() and self._target.stat().st_size
        if self._target is None:
            self._stream: TextIO = sys.stdout
        elif fmt == "jsonl":
            if appending:
                _drop_partial_line(self._target)
            self._stream = open(self._target, "a" if appending else "w", encoding="utf-8", newline="")
        else:
            self._tmp = self._target.with_name(f".{self._target.name}.{os.getpid()}.tmp")
            if appending:
                shutil.copyfile(self._target, self._tmp)
                _ensure_newline(self._tmp)
            self._stream = open(self._tmp, "a" if appending else "w", encoding="utf-8", newline="")
        self._csv = csv.writer(self._stream, lineterminator="\n") if fmt == "csv" else None
        if self._csv is not None and not appending:
            self._csv.writerow(columns(probs))
        elif fmt == "json":
            self._stream.write("[")

    def write(self, results: Iterable[Result]) -> None:
        """Write a batch of results and flush them."""
        for result in results:
            rec = record(result, self.probs)
            if self._csv is not None:
                self._csv.writerow(_csv_cells(rec))
            elif self.fmt == "json":
                self._stream.write(("\n  " if self.count == 0 else ",\n  ") + json.dumps(rec, ensure_ascii=False))
            else:
                self._stream.write(json.dumps(rec, ensure_ascii=False) + "\n")
            self.count += 1
        self._stream.flush()

    def close(self) -> None:
        """Finish the file and move it into place; always called, so computed rows are never lost."""
        if self.fmt == "json":
            self._stream.write("\n]\n" if self.count else "]\n")
        self._stream.flush()
        if self._stream is sys.stdout:
            return
        os.fsync(self._stream.fileno())
        self._stream.close()
        if self._tmp is not None and self._target is not None:
            os.replace(self._tmp, self._target)


def already_scored(out: str, fmt: str) -> set[str]:
    """Paths that an existing CSV or JSONL output already holds a row for (used by --resume)."""
    path = Path(out)
    if out == "-" or not path.exists():
        return set()
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        if fmt == "csv":
            return {row["path"] for row in csv.DictReader(f) if row.get("path")}
        done = set()
        for line in f:
            if not line.endswith("\n"):
                break  # a line cut short by a crash: scored again
            try:
                done.add(json.loads(line)["path"])
            except (ValueError, KeyError, TypeError):
                raise OutputError(f"{out}: not a digitscan JSONL file (cannot resume from it)") from None
        return done


def _drop_partial_line(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _ensure_newline(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "ab") as f:
            f.write(b"\n")
