"""The line reader: a field read whole, as one line of writing, beside the segmenter (fields.py).

A field's upright ink (`fields.find_fields`) is cut to its ink and scaled to LINE_INK rows in a line
LINE_HEIGHT rows high. LineNet reads the line column by column (a step every LINE_STRIDE columns) and
says at each step which digit it sees, or none (CTC's blank; Graves et al. 2006). The text is the best
path's digits; its confidence, the probability of that text over every path that spells it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .defaults import LINES_NAME
from .fields import FieldInk
from .model import WeightsError, default_weights, open_archive
from .preprocess import FAINT_INK, MEAN, STD

LINE_HEIGHT = 32
LINE_INK = 26
"""A line's ink is scaled to this many of its LINE_HEIGHT rows..."""
LINE_MARGIN = 4
"""...with this many columns of paper either side."""
LINE_STRIDE = 4
"""Columns of the line per step of the reader."""
BLANK = 10
"""CTC's 'no digit here', after the ten digits."""
LINE_CHUNK = 32
"""Lines read together, in order of width, so that few are padded far beyond their own width."""


class LineNet(nn.Module):
    """A small CRNN: four conv blocks (32, 64, 96, 128 channels) take a line's height to 1 and its width
    to a step every LINE_STRIDE columns; a bidirectional GRU reads the steps; 11 scores a step.

    Input: N x 1 x LINE_HEIGHT x W, ink 1 on paper 0. Output: N x W / LINE_STRIDE x 11 scores.
    """

    __constants__ = ["mean", "std"]

    def __init__(self) -> None:
        super().__init__()
        self.mean, self.std = MEAN, STD  # as the digits' frames are normalised

        def block(cin: int, cout: int, pool: tuple[int, int]) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                    nn.MaxPool2d(pool)]

        self.features = nn.Sequential(*block(1, 32, (2, 2)), *block(32, 64, (2, 2)), *block(64, 96, (2, 1)),
                                      *block(96, 128, (4, 1)))
        self.rnn = nn.GRU(128, 96, bidirectional=True, batch_first=True)
        self.out = nn.Linear(192, BLANK + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = self.features((x - self.mean) / self.std).squeeze(2).transpose(1, 2)
        steps, _ = self.rnn(steps)
        return self.out(steps)


@dataclass
class LineReading:
    """A field as the line reader reads it: its text, the probability of that text, and for each digit
    its ten probabilities (at the step where the reader is surest of it)."""

    text: str
    confidence: float
    probs: list[list[float]]


def line_images(inks: Sequence[FieldInk | None]) -> list[torch.Tensor]:
    """Each field's upright ink (None: blank) as a line for the reader (LINE_HEIGHT x W, 0 to 1)."""
    return [_line(ink.ink if ink is not None else torch.zeros(1, 1)) for ink in inks]


def _line(ink: torch.Tensor) -> torch.Tensor:
    on = ink > FAINT_INK
    rows, cols = on.any(dim=1).nonzero().flatten(), on.any(dim=0).nonzero().flatten()
    if not len(rows):
        return torch.zeros(LINE_HEIGHT, 2 * LINE_MARGIN)
    crop = ink[int(rows[0]):int(rows[-1]) + 1, int(cols[0]):int(cols[-1]) + 1]
    width = max(1, round(crop.shape[1] * LINE_INK / crop.shape[0]))
    small = F.interpolate(crop[None, None], size=(LINE_INK, width), mode="bilinear", antialias=True,
                          align_corners=False)[0, 0]
    line = torch.zeros(LINE_HEIGHT, width + 2 * LINE_MARGIN)
    top = (LINE_HEIGHT - LINE_INK) // 2
    line[top:top + LINE_INK, LINE_MARGIN:LINE_MARGIN + width] = small.clamp(0, 1)
    return line


def batch_lines(lines: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Lines padded with paper to one width (a multiple of LINE_STRIDE): N x 1 x LINE_HEIGHT x W, and
    each line's own number of steps."""
    width = max(line.shape[1] for line in lines)
    width += -width % LINE_STRIDE
    x = torch.zeros(len(lines), 1, LINE_HEIGHT, width)
    for k, line in enumerate(lines):
        x[k, 0, :, :line.shape[1]] = line
    return x, torch.tensor([max(1, line.shape[1] // LINE_STRIDE) for line in lines])


def decode(scores: torch.Tensor, steps: torch.Tensor) -> list[LineReading]:
    """The best path's text for each line's scores (N x T x 11; `steps`: each line's own), with its
    probability over all paths and each digit's probabilities."""
    logs = scores.float().log_softmax(dim=2)
    best = logs.argmax(dim=2).tolist()
    probs = logs.exp()
    found: list[tuple[list[int], list[int]]] = []  # each line's digits, and the step where each is surest
    for k, path in enumerate(best):
        digits, at, before = [], [], BLANK
        for t, c in enumerate(path[:int(steps[k])]):
            if c != BLANK and c != before:
                digits.append(c)
                at.append(t)
            elif c != BLANK and probs[k, t, c] > probs[k, at[-1], c]:
                at[-1] = t
            before = c
        found.append((digits, at))
    spelled = [k for k, (digits, _) in enumerate(found) if digits]
    confidence = [0.0] * len(found)
    if spelled:
        targets = torch.tensor([d for k in spelled for d in found[k][0]])
        lengths = torch.tensor([len(found[k][0]) for k in spelled])
        loss = F.ctc_loss(logs[spelled].transpose(0, 1), targets, steps[spelled], lengths, blank=BLANK,
                          reduction="none", zero_infinity=True)
        for k, nll in zip(spelled, loss.tolist(), strict=True):
            confidence[k] = float(torch.exp(torch.tensor(-nll)))
    out = []
    for k, (digits, at) in enumerate(found):
        each = probs[k, at, :BLANK]
        each = each / each.sum(dim=1, keepdim=True)
        out.append(LineReading("".join(map(str, digits)), confidence[k], each.tolist()))
    return out


class LineReader:
    """The line reader's archive on a device; `read` turns lines into LineReadings."""

    def __init__(self, weights: Path | None = None, device: torch.device | str = "cpu") -> None:
        self.weights = default_weights(LINES_NAME) if weights is None else Path(weights)
        self.device = torch.device(device)
        self.model = load_line_archive(self.weights, self.device)

    def read(self, lines: Sequence[torch.Tensor]) -> list[LineReading]:
        return read_lines(lambda x: check_line_scores(self.model(x), len(x), self.weights), lines, self.device)


def by_width(lines: Sequence[torch.Tensor], size: int) -> list[list[int]]:
    """The lines' indices in groups of `size`, in order of width, so that few are padded far beyond their own."""
    order = sorted(range(len(lines)), key=lambda k: lines[k].shape[1])
    return [order[start:start + size] for start in range(0, len(order), size)]


@torch.inference_mode()
def read_lines(model: Callable[[torch.Tensor], torch.Tensor], lines: Sequence[torch.Tensor],
               device: torch.device) -> list[LineReading]:
    """Each line as `model` (on `device`) reads it, LINE_CHUNK lines of like widths at a time."""
    read: dict[int, LineReading] = {}
    for chunk in by_width(lines, LINE_CHUNK):
        x, steps = batch_lines([lines[k] for k in chunk])
        scores = model(x.to(device)).cpu()
        read |= zip(chunk, decode(scores, steps.clamp(max=scores.shape[1])), strict=True)
    return [read[k] for k in range(len(lines))]


def check_line_scores(scores: object, n: int, weights: Path) -> torch.Tensor:
    """The reader's output for n lines, if it is n x T x 11 finite scores; else a set-up error."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 3 or scores.shape[0] != n \
            or scores.shape[2] != BLANK + 1:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise WeightsError(f"{weights}: the line reader returned {shape} for {n} lines, not {n} x steps x 11 scores")
    if not bool(torch.isfinite(scores).all()):
        raise WeightsError(f"{weights}: the line reader returned NaN or infinite scores")
    return scores


def load_line_archive(path: Path, device: torch.device | str = "cpu", freeze: bool = True) -> torch.jit.ScriptModule:
    """Load a LineNet TorchScript archive and check that it reads a line."""
    model = open_archive(path, device, freeze)
    try:
        with torch.inference_mode():
            check_line_scores(model(torch.zeros(1, 1, LINE_HEIGHT, 8 * LINE_STRIDE, device=device)), 1, path)
    except WeightsError:
        raise
    except Exception as exc:
        why = str(exc).strip().splitlines()[-1][:160]  # TorchScript's own traceback comes first
        raise WeightsError(f"{path}: archive does not read N x 1 x {LINE_HEIGHT} x W lines ({why})") from None
    return model
