"""Training data for `fit` and `eval`: MNIST as whole tensors, and the user's labelled scans (a folder or a CSV;
in a CSV, a field of several digits labelled with all of them)."""

from __future__ import annotations

import contextlib
import csv
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .errors import DigitscanError

if TYPE_CHECKING:
    from .scorer import Reading


class DataUnavailable(DigitscanError):
    """Training data that is missing and cannot be downloaded or read."""


DIGIT_NAMES = tuple(str(d) for d in range(10))
LABEL_COLUMNS = ("label", "digit", "text")
NOT_A_DIGIT = "none"
"""The label `review` gives an image that holds no digit."""


def default_data_root() -> Path:
    """Where MNIST is downloaded when --data is not given: $XDG_CACHE_HOME/digitscan/mnist."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "digitscan" / "mnist"


def load_mnist(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST as (uint8 images N x 28 x 28, int64 labels N), downloading into `root` if needed."""
    from torchvision.datasets import MNIST

    split = "training" if train else "test"
    try:
        with contextlib.redirect_stdout(sys.stderr):  # torchvision prints download progress to stdout
            ds = MNIST(str(root), train=train, download=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataUnavailable(f"MNIST {split} split not found in {root} and could not be downloaded "
                              f"({reason}); point --data at a torchvision MNIST root") from None
    return ds.data, ds.targets


def labelled_files(source: Path) -> list[tuple[str, str]]:
    """(path, label) for each labelled image: a folder with subfolders named 0..9 (any of them), or a
    CSV file with the columns path and label (or digit), such as the corrections.csv that `review` writes.
    A label of several digits ("04071", a CSV's only) names the digits of a field, left to right."""
    return _labels_from_csv(source) if source.is_file() else _labels_from_folder(source)


def _labels_from_folder(folder: Path) -> list[tuple[str, str]]:
    """The torchvision ImageFolder layout: folder/7/scan.png is a 7."""
    from torchvision.datasets import ImageFolder

    from .inputs import IMAGE_SUFFIXES

    try:
        listing = ImageFolder(str(folder), loader=str, is_valid_file=lambda p: Path(p).suffix.lower() in IMAGE_SUFFIXES,
                              allow_empty=True)
    except (FileNotFoundError, OSError) as exc:
        raise DataUnavailable(f"{folder}: no labelled images ({exc})") from None
    wrong = [c for c in listing.classes if c not in DIGIT_NAMES]
    if wrong:
        raise DataUnavailable(f"{folder}: subfolders must be named 0 to 9, found {', '.join(wrong[:5])}")
    if not listing.samples:
        raise DataUnavailable(f"{folder}: no images in its subfolders 0 to 9")
    return [(path, listing.classes[index]) for path, index in listing.samples]


def _labels_from_csv(path: Path) -> list[tuple[str, str]]:
    """Rows of path,label (one digit, or a field's digits); a path is relative to the CSV's folder unless
    absolute. A label of `NOT_A_DIGIT` (or an empty one) marks an image that holds no digit: it is left out."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            reader = csv.DictReader(f)
            label = next((name for name in LABEL_COLUMNS if name in (reader.fieldnames or [])), None)
            if "path" not in (reader.fieldnames or []) or label is None:
                raise DataUnavailable(f"{path}: a labels CSV needs the columns path and label")
            rows = [(reader.line_num, row["path"], (row[label] or "").strip()) for row in reader]
    except (OSError, UnicodeError, csv.Error) as exc:
        raise DataUnavailable(f"{path}: cannot read labels ({exc})") from None
    pairs = []
    for line, name, value in rows:
        if value in ("", NOT_A_DIGIT):
            continue
        if not (value.isascii() and value.isdigit()) or not name:
            raise DataUnavailable(f"{path}, line {line}: label must be digits 0 to 9 or {NOT_A_DIGIT}, not {value!r}"
                                  if name else f"{path}, line {line}: no path")
        pairs.append((str(path.parent / name) if not Path(name).is_absolute() else name, value))
    if not pairs:
        raise DataUnavailable(f"{path}: no rows labelled 0 to 9")
    return pairs


def singles_and_fields(files: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """`labelled_files`' images labelled with one digit, and the fields (labelled with several)."""
    return [f for f in files if len(f[1]) == 1], [f for f in files if len(f[1]) > 1]


def labelled_fields(fields: list[tuple[str, str]], weights: Path | None,
                    device: str = "cpu") -> Iterator[tuple[str, str, list[Reading] | str]]:
    """(path, label, its digits' readings, frames kept) for each labelled field, cut into as many digits
    as its label has (`run --digits`); in place of the readings, why the field gives none."""
    from .scorer import Scorer

    for length in sorted({len(label) for _, label in fields}):
        group = [(path, label) for path, label in fields if len(label) == length]
        scorer = Scorer(weights, device, workers=0, digits=length, keep_frames=True)
        results = (r for batch in scorer.score([path for path, _ in group]) for r in batch)
        for (path, label), result in zip(group, results, strict=True):
            if result.digits is None:
                yield path, label, result.error or "blank (no ink found)"
            elif len(result.digits) != length:
                yield path, label, f"cut into {len(result.digits)} digits, not the {length} of its label"
            else:
                yield path, label, result.digits


def load_labelled(source: Path, weights: Path | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Labelled scans (see `labelled_files`), preprocessed exactly as `run` does; fields cut into their
    digits with the model in `weights` judging the cuts.

    Returns (uint8 images N x 28 x 28, labels N, messages for the files that were skipped).
    """
    from .dataset import prepared_items
    from .frames import to_uint8

    singles, fields = singles_and_fields(labelled_files(source))
    images, labels, skipped = [], [], []
    for (path, label), item in zip(singles, prepared_items([path for path, _ in singles]), strict=True):
        if item.pixels is None:
            skipped.append(f"{path}: {item.error or 'blank (no ink found)'}")
            continue
        images.append(torch.from_numpy(to_uint8(item.pixels)))
        labels.append(int(label))
    for path, label, read in labelled_fields(fields, weights):
        if isinstance(read, str):
            skipped.append(f"{path}: {read}")
            continue
        for digit, reading in zip(label, read, strict=True):
            if reading.frame is not None:
                images.append(torch.from_numpy(reading.frame))
                labels.append(int(digit))
    if not images:
        raise DataUnavailable(f"{source}: no readable labelled images")
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), skipped
