"""`digitscan eval`: accuracy, confusion matrix and calibration of weights on MNIST's test split or labelled scans."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .calibration import Bin, calibration_error, reliability
from .defaults import RUN_BATCH
from .devices import pick_device
from .model import load_archive
from .preprocess import normalise
from .scorer import Scorer
from .trainingdata import labelled_fields, labelled_files, load_mnist, singles_and_fields


@dataclass
class Evaluation:
    name: str
    confusion: torch.Tensor
    """10 x 10 counts, rows the true digit, columns the prediction."""
    unread: int = 0
    """Images that were blank or unreadable (counted as wrong)."""
    confidence: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    """Each reading's confidence, and whether it was right: the calibration figures."""
    correct: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.bool))
    unit: str = "images"
    """What is counted: "digits" where labelled fields count digit by digit."""

    @property
    def total(self) -> int:
        return int(self.confusion.sum()) + self.unread

    @property
    def accuracy(self) -> float:
        return float(self.confusion.diag().sum()) / max(self.total, 1)

    @property
    def calibration_error(self) -> float:
        return calibration_error(self.confidence, self.correct)

    @property
    def reliability(self) -> list[Bin]:
        return reliability(self.confidence, self.correct)


@dataclass
class EvalOptions:
    """What `digitscan eval` was asked to do; the CLI fills it from its flags."""

    data: Path
    """MNIST root, whose test split is scored unless `labeled` is given."""
    labeled: Path | None = None
    weights: Path | None = None
    device: str = "auto"
    workers: int | None = None


def evaluate(opts: EvalOptions) -> Evaluation:
    """Score the labelled folder, or else MNIST's test split."""
    if opts.labeled is not None:
        return evaluate_labelled(opts.labeled, opts.weights, opts.device, workers=opts.workers)
    return evaluate_mnist(opts.data, opts.weights, opts.device)


@torch.inference_mode()
def probabilities(model: torch.nn.Module, images: torch.Tensor, device: torch.device,
                  batch_size: int = 1000) -> torch.Tensor:
    """The model's ten probabilities for each uint8 MNIST-format image (N x 28 x 28), on the CPU."""
    model.eval()
    return torch.cat([torch.softmax(model(normalise(images[i:i + batch_size].to(device).unsqueeze(1).float() / 255))
                                    .float(), dim=1).cpu() for i in range(0, len(images), batch_size)])


def evaluate_mnist(root: Path, weights: Path | None = None, device: str = "auto") -> Evaluation:
    """Score MNIST's test split (already 28 x 28 and centred, so only normalised)."""
    dev = pick_device(device)
    images, labels = load_mnist(root, train=False)
    confidence, predicted = probabilities(load_archive(weights, dev), images, dev).max(dim=1)
    confusion = torch.bincount(labels * 10 + predicted, minlength=100).view(10, 10)
    return Evaluation("MNIST test split", confusion, confidence=confidence, correct=predicted == labels)


def evaluate_labelled(source: Path, weights: Path | None = None, device: str = "auto", batch_size: int = RUN_BATCH,
                      workers: int | None = None) -> Evaluation:
    """Score labelled scans (a folder of subfolders 0..9, or a CSV) through the same pipeline as `digitscan run`;
    a field's digits (read as `run --digits` reads them) count one by one."""
    singles, fields = singles_and_fields(labelled_files(source))
    truth = {path: int(label) for path, label in singles}
    scorer = Scorer(weights, device, batch_size, workers)
    confusion = torch.zeros(10, 10, dtype=torch.int64)
    unread = 0
    confidence: list[float] = []
    correct: list[bool] = []

    def count(true: int, digit: int, sure: float) -> None:
        confusion[true, digit] += 1
        confidence.append(sure)
        correct.append(digit == true)

    for batch in scorer.score(list(truth)):
        for result in batch:
            if result.digit is None or result.confidence is None:
                unread += 1
            else:
                count(truth[result.path], result.digit, result.confidence)
    for _, label, read in labelled_fields(fields, weights, device):
        if isinstance(read, str):
            unread += len(label)
            continue
        for true, reading in zip(label, read, strict=True):
            count(int(true), reading.digit, reading.confidence)
    return Evaluation(str(source), confusion, unread, torch.tensor(confidence), torch.tensor(correct, dtype=torch.bool),
                      unit="digits" if fields else "images")
