"""Training data for `fit` and `eval`: MNIST as whole tensors, and the user's labelled folders."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch

from .errors import DigitscanError
from .preprocess import MEAN, STD


class DataUnavailable(DigitscanError):
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


def labelled_files(folder: Path) -> list[tuple[str, int]]:
    """(path, digit) for each image in subfolders named 0..9 (the torchvision ImageFolder layout)."""
    from torchvision.datasets import ImageFolder

    from .inputs import EXTENSIONS

    try:
        listing = ImageFolder(str(folder), loader=str, is_valid_file=lambda p: Path(p).suffix.lower() in EXTENSIONS)
    except (FileNotFoundError, OSError) as exc:
        raise DataUnavailable(f"{folder}: no labelled images ({exc})") from None
    wrong = [c for c in listing.classes if c not in {str(d) for d in range(10)}]
    if wrong:
        raise DataUnavailable(f"{folder}: subfolders must be named 0 to 9, found {', '.join(wrong[:5])}")
    return [(path, int(listing.classes[index])) for path, index in listing.samples]


def load_labelled(folder: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Labelled scans (see `labelled_files`), preprocessed exactly as `run` does.

    Returns (uint8 images N x 28 x 28, labels N, messages for the files that were skipped).
    """
    from .dataset import ScanDataset

    files = labelled_files(folder)
    dataset = ScanDataset([path for path, _ in files])
    images, labels, skipped = [], [], []
    for i, (path, digit) in enumerate(files):
        item = dataset[i]
        if item.pixels is None:
            skipped.append(f"{path}: {item.error or 'blank (no ink found)'}")
            continue
        pixels = torch.from_numpy(item.pixels) * STD + MEAN
        images.append((pixels * 255).round().clamp(0, 255).to(torch.uint8))
        labels.append(digit)
    if not images:
        raise DataUnavailable(f"{folder}: no readable labelled images")
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), skipped
