"""Writing results as CSV, JSON or JSONL: files atomically (temp + rename), JSONL and stdout as they come."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import stat
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from .atomic import write_json_atomic
from .errors import DigitscanError
from .scorer import Result

COLUMNS = ["path", "digit", "confidence", "inverted", "status", "error"]
FIELD_COLUMNS = ["path", "text", "confidence", "inverted", "status", "error"]
"""With --field: the digits read as one string; JSON and JSONL rows also carry `digits`."""
PROB_COLUMNS = [f"p{d}" for d in range(10)]
SUFFIXES = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
SETTINGS_SUFFIX = ".settings.json"
"""Beside a results file, the settings that shaped its rows: `--resume` must not change them."""
SETTING_FLAGS = {"columns": "--probs", "weights": "--weights", "invert": "--invert", "digits": "--digits",
                 "lines": "--line-weights", "frames": "--every/--fps"}
NAME_ERRORS = {"csv": "surrogateescape", "json": "backslashreplace", "jsonl": "backslashreplace"}
"""A file name that is not valid UTF-8 (ordinary on Linux) is written as its own bytes in CSV, and as
the escape \\udcXX that Python's json reads back to the same name in JSON: either way --resume finds it."""


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
        if sys.stdout is None:
            raise OutputError("standard output is closed; name a results file with --out")
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


def columns(probs: bool, field: bool = False) -> list[str]:
    """A file's columns (CSV) or keys (JSON), `digits` aside: a field's probabilities go in it."""
    if field:
        return FIELD_COLUMNS
    return COLUMNS + (PROB_COLUMNS if probs else [])


def check_field_format(fmt: str, probs: bool) -> None:
    if probs and fmt == "csv":
        raise OutputError("--probs with --field gives each digit's probabilities, in JSON or JSONL: "
                          "add --format jsonl (or json)")


def save_settings(out: str, settings: dict[str, Any]) -> None:
    """Record `settings` (columns, weights' sha256, invert, ...) beside a results file (not beside a device)."""
    if out != "-" and _regular_or_new(Path(out)):
        write_json_atomic(settings_file(out), settings)


def check_resume_settings(out: str, fmt: str, settings: dict[str, Any]) -> None:
    """Refuse to continue `out` unless it is digitscan's own output (its header) and this run's rows
    would match its own: columns, weights and polarity (the record beside it, when there is one)."""
    path = Path(out)
    if out == "-" or not path.exists() or not path.stat().st_size:
        return
    if not _regular_or_new(path):
        raise OutputError(f"{out}: not a regular file; --resume continues a results file")
    own = _columns_in(path, fmt)
    if own not in (columns(False), columns(True), columns(False, field=True)):
        raise OutputError(f"{out}: not a digitscan results file (its first line is not digitscan's {fmt} header); "
                          "--resume only appends to digitscan's own output")
    saved = read_settings(out) or {"columns": own}
    differ = [flag for key, flag in SETTING_FLAGS.items() if key in saved and saved[key] != settings.get(key)]
    if differ:
        raise OutputError(f"{out}: written with other {', '.join(differ)} settings than this run; --resume "
                          "must keep them (or write to a new file)")


def read_settings(out: str) -> dict[str, Any] | None:
    """The settings record beside a results file (see `save_settings`); None when there is none."""
    try:
        saved = json.loads(settings_file(out).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        saved = None
    if not isinstance(saved, dict):
        raise OutputError(f"{settings_file(out)}: unreadable; remove it to resume without checking")
    return saved


def _columns_in(path: Path, fmt: str) -> list[str]:
    """The header of a CSV file, or the keys of a JSONL file's first record, `digits` aside (a field's
    readings: `columns`) ([] when there are none)."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        try:
            if fmt == "csv":
                return next(csv.reader(f), [])
            first = json.loads(f.readline())
        except (ValueError, csv.Error):
            return []
    return [key for key in first if key != "digits"] if isinstance(first, dict) else []


def record(result: Result, probs: bool, field: bool = False, digits: bool = False) -> dict[str, Any]:
    """The JSON object for one result (None where a CSV cell is empty); with `field`, `text` in place of
    `digit`, and with `digits` (JSON and JSONL), each digit's reading (with `probs`, its probabilities)."""
    rec: dict[str, Any] = {"path": result.path, **({"text": result.text} if field else {"digit": result.digit}),
                           "confidence": None if result.confidence is None else round(result.confidence, 6),
                           "inverted": result.inverted, "status": result.status, "error": result.error or None}
    if field:
        if digits:
            rec["digits"] = [{"digit": r.digit, "confidence": round(r.confidence, 6), "box": list(r.box)}
                             | ({"probs": [round(p, 6) for p in r.probs]} if probs else {})
                             for r in result.digits or []]
        return rec
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

    def __init__(self, out: str, fmt: str, probs: bool = False, resume: bool = False, field: bool = False) -> None:
        self.fmt, self.probs, self.field, self.count = fmt, probs, field, 0
        # A link is written through (the file it names is replaced, not the link).
        self._target = None if out == "-" else Path(os.path.realpath(out))
        self._tmp: Path | None = None
        appending = resume and self._target is not None and self._target.exists() and self._target.stat().st_size
        if self._target is None:
            self._stream: TextIO = sys.stdout
            if isinstance(sys.stdout, io.TextIOWrapper):
                sys.stdout.reconfigure(errors=NAME_ERRORS[fmt])
        elif not _regular_or_new(self._target):  # a device or a pipe: written into, never replaced
            self._stream = open(self._target, "w", encoding="utf-8", errors=NAME_ERRORS[fmt], newline="")
        elif fmt == "jsonl":
            if appending:
                _drop_partial_line(self._target)
            self._stream = open(self._target, "a" if appending else "w", encoding="utf-8", errors=NAME_ERRORS[fmt],
                                newline="")
        else:
            self._tmp = self._target.with_name(f".{self._target.name}.{os.getpid()}.tmp")
            if appending:
                shutil.copyfile(self._target, self._tmp)
                _ensure_newline(self._tmp)
            self._stream = open(self._tmp, "a" if appending else "w", encoding="utf-8", errors=NAME_ERRORS[fmt],
                                newline="")
        self._csv = csv.writer(self._stream, lineterminator="\n") if fmt == "csv" else None
        with self._failing_as_output_error():
            if self._csv is not None and not appending:
                self._csv.writerow(columns(probs, field))
            elif fmt == "json":
                self._stream.write("[")

    @contextmanager
    def _failing_as_output_error(self) -> Iterator[None]:
        """A full disk or device, or any other write error, as one line naming the output."""
        try:
            yield
        except BrokenPipeError:
            raise
        except OSError as exc:
            where = "standard output" if self._target is None else str(self._target)
            raise OutputError(f"{where}: cannot write results ({exc.strerror or exc})") from None

    def write(self, results: Iterable[Result]) -> None:
        """Write a batch of results and flush them."""
        with self._failing_as_output_error():
            self._write(results)

    def _write(self, results: Iterable[Result]) -> None:
        for result in results:
            rec = record(result, self.probs, self.field, digits=self._csv is None)
            if self._csv is not None:
                self._csv.writerow(_csv_cells(rec))
            elif self.fmt == "json":
                self._stream.write(("\n  " if self.count == 0 else ",\n  ") + json.dumps(rec, ensure_ascii=False))
            else:
                self._stream.write(json.dumps(rec, ensure_ascii=False) + "\n")
            self.count += 1
        self._stream.flush()

    def abandon(self) -> Path | None:
        """After a failure: leave the target as it was and keep the rows written so far in a file
        named for what it is, TARGET.partial (returned). JSON Lines and streams keep what they hold."""
        if self._tmp is None or self._target is None:
            with contextlib.suppress(OSError):  # a full device or a closed pipe: nothing more can go there
                self._stream.flush()
            return None
        with contextlib.suppress(OSError):
            self._stream.close()
        partial = self._target.with_name(self._target.name + ".partial")
        os.replace(self._tmp, partial)
        return partial

    def close(self) -> None:
        """Finish the file and move it into place (after success, or Ctrl-C: the rows are whole)."""
        with self._failing_as_output_error():
            if self.fmt == "json":
                self._stream.write("\n]\n" if self.count else "]\n")
            self._stream.flush()
            if self._stream is sys.stdout:
                return
            if self._target is not None and _regular_or_new(self._target):
                os.fsync(self._stream.fileno())
            self._stream.close()
            if self._tmp is not None and self._target is not None:
                os.replace(self._tmp, self._target)


def _regular_or_new(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return True


def check_not_an_input(out: str, paths: Sequence[str]) -> None:
    """Refuse an --out that is one of the inputs (`-o *.png` puts the first image after -o)."""
    if out == "-" or not os.path.exists(out) or not _regular_or_new(Path(out)):
        return
    target = os.path.realpath(out)
    name = os.path.basename(target)
    for path in paths:
        if os.path.basename(path) == name or os.path.islink(path):
            if os.path.realpath(path) == target:
                raise OutputError(f"{out}: is one of the inputs; refusing to write results over it")


def already_scored(out: str, fmt: str) -> set[str]:
    """Paths that an existing CSV or JSONL output already holds a row for (used by --resume)."""
    path = Path(out)
    if out == "-" or not path.exists():
        return set()
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
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


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a results file that `run` wrote (CSV, JSON or JSONL, by its extension), as the
    records `record` makes: numbers as numbers, empty cells as None."""
    fmt = pick_format(str(path), None)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            if fmt == "csv":
                rows: list[Any] = [_typed(row) for row in csv.DictReader(f)]
            elif fmt == "json":
                rows = json.load(f)
            else:
                rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError, csv.Error) as exc:
        raise OutputError(f"{path}: cannot read results ({exc})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "path" in r and "status" in r for r in rows):
        raise OutputError(f"{path}: not a digitscan results file (rows need path and status)")
    return rows


def _typed(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row with the types its JSON twin has."""
    rec: dict[str, Any] = {key: value if value != "" else None for key, value in row.items()}
    for key in ("confidence", *PROB_COLUMNS):
        if rec.get(key) is not None:
            rec[key] = float(rec[key])
    if rec.get("digit") is not None:
        rec["digit"] = int(rec["digit"])
    if rec.get("inverted") is not None:
        rec["inverted"] = rec["inverted"] == "true"
    return rec

