"""Confidence that means what it says: a temperature fitted on held-out renders, and its measure.

`fit` ends by rendering held-out MNIST digits in every style of `synth` (scans, photos, bitmaps,
continental shapes), reading them through run's own preprocessing, and choosing the temperature T
whose softmax(scores / T) has the least calibration error on them. T lives in
the archive (`DigitNet.temperature`), so every reader of the archive gets calibrated confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .dataset import prepared_items
from .defaults import RUN_BATCH
from .synth import SHAPES, STYLES

RELIABILITY_EDGES = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
"""Confidence bins of the reliability table; the calibration error is measured over the same bins."""

TEMPERATURES = tuple(round(0.5 + 0.02 * k, 2) for k in range(126))
"""The temperatures `fit` chooses from: 0.5 to 3.0."""

@dataclass(frozen=True)
class Bin:
    low: float
    high: float
    count: int
    confidence: float
    """Mean confidence of the readings in the bin."""
    accuracy: float


def reliability(confidence: torch.Tensor, correct: torch.Tensor,
                edges: tuple[float, ...] = RELIABILITY_EDGES) -> list[Bin]:
    """Readings grouped by confidence: how sure the model was, and how often it was right."""
    bins = []
    for k, (low, high) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        inside = (confidence >= low) & ((confidence < high) if k < len(edges) - 2 else (confidence <= high))
        n = int(inside.sum())
        bins.append(Bin(low, high, n, float(confidence[inside].mean()) if n else 0.0,
                        float(correct[inside].float().mean()) if n else 0.0))
    return bins


def calibration_error(confidence: torch.Tensor, correct: torch.Tensor,
                      edges: tuple[float, ...] = RELIABILITY_EDGES) -> float:
    """Expected calibration error: |accuracy - confidence| per bin, weighted by the bin's share of readings."""
    total = max(len(confidence), 1)
    return sum(b.count / total * abs(b.accuracy - b.confidence) for b in reliability(confidence, correct, edges))


def error_at(scores: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """The calibration error of softmax(scores / temperature) against `labels`."""
    confidence, predicted = torch.softmax(scores / temperature, dim=1).max(dim=1)
    return calibration_error(confidence, predicted == labels)


def fit_temperature(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The T in `TEMPERATURES` whose softmax(scores / T) has the least calibration error on `labels`.

    Chosen on the error itself, not on the log-likelihood: the likelihood's optimum chases the few
    digits read wrong with high confidence (cluttered photos) and leaves every other reading under-sure.
    """
    return min(TEMPERATURES, key=lambda t: error_at(scores, labels, t))


def render(images: torch.Tensor, labels: torch.Tensor, count: int, seed: int) -> tuple[list[Image.Image], torch.Tensor]:
    """`count` digits drawn from `images` (uint8 N x 28 x 28), each rendered in a style of `synth`, in turn."""
    rng = np.random.default_rng(seed)
    styles = list(STYLES.values())
    shapes = {digit: style for digit, style in SHAPES.values()}
    picks = rng.choice(len(labels), size=min(count, len(labels)), replace=False)
    scans, truth = [], []
    for k, i in enumerate(picks.tolist()):
        digit = int(labels[i])
        style = shapes[digit] if digit in shapes and rng.random() < 0.5 else styles[k % len(styles)]
        scans.append(style(images[i].numpy(), rng))
        truth.append(digit)
    return scans, torch.tensor(truth)


@torch.no_grad()  # not inference_mode: the temperature is then fitted on these scores with autograd
def scores_of(model: torch.nn.Module, scans: list[Image.Image], labels: torch.Tensor,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's scores for the scans it can read (through run's preprocessing), and their labels."""
    ok = [item for item in prepared_items(scans) if item.pixels is not None]
    model.eval()
    x = torch.from_numpy(np.stack([item.pixels for item in ok])).unsqueeze(1)  # type: ignore[misc]
    scores = torch.cat([model(x[i:i + RUN_BATCH].to(device)).float().cpu() for i in range(0, len(x), RUN_BATCH)])
    return scores, labels[[item.index for item in ok]]
