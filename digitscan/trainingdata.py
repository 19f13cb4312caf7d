"""Training data for `fit` and `eval`: MNIST as whole tensors, and the user's labelled folders."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch

from .decode import DecodeError, load_grey
from .preprocess import MEAN, STD, prepare


class DataUnavailable(Exception):
    """Training data that is missing and cannot be downloaded or read."""


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


def load_labelled(folder: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Scans in subfolders named 0..9 (torchvision ImageFolder layout), preprocessed exactly as `run` does.

    Returns (uint8 images N x 28 x 28, labels N, messages for the files that were skipped).
    """
    from torchvision.datasets import ImageFolder

    from .inputs import EXTENSIONS

    try:
        ds = ImageFolder(str(folder), loader=str, is_valid_file=lambda p: Path(p).suffix.lower() in EXTENSIONS)
    except (FileNotFoundError, OSError) as exc:
        raise DataUnavailable(f"{folder}: no labelled images ({exc})") from None
    wrong = [c for c in ds.classes if c not in {str(d) for d in range(10)}]
    if wrong:
        raise DataUnavailable(f"{folder}: subfolders must be named 0 to 9, found {', '.join(wrong[:5])}")
    images, labels, skipped = [], [], []
    for path, index in ds.samples:
        try:
            prepared = prepare(load_grey(path))
        except DecodeError as exc:
            skipped.append(f"{path}: {exc}")
            continue
        if prepared.pixels is None:
            skipped.append(f"{path}: blank (no ink found)")
            continue
        pixels = torch.from_numpy(prepared.pixels) * STD + MEAN
        images.append((pixels * 255).round().clamp(0, 255).to(torch.uint8))
        labels.append(int(ds.classes[index]))
    if not images:
        raise DataUnavailable(f"{folder}: no readable labelled images")
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), skipped
