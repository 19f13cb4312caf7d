"""`digitscan fit --fields`: train the line reader (lines.py) on fields written with MNIST's digits."""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .augment import augment
from .dataset import ScanDataset
from .decode import load_grey
from .defaults import FIT_EPOCHS, LINE_BATCH, LINE_LR, LINES_NAME
from .devices import describe, pick_device
from .fields import FIELD_SIDE, find_fields
from .fit import HOLDOUT, LABELLED_SHARE
from .lines import BLANK, LINE_HEIGHT, LINE_STRIDE, LineNet, batch_lines, by_width, line_images, read_lines
from .model import WeightsError, default_weights, open_archive, save_archive
from .scorer import default_workers
from .stopping import StopRequest
from .synth import FIELD_LOOKS, field
from .trainingdata import DataUnavailable, labelled_files, load_mnist, singles_and_fields

FIELDS_PER_DIGIT = 2
"""Training fields written per training digit (each digit is in about eight of them)."""
FIELD_LENGTHS = (1, 7)
"""Digits in a training field, drawn uniformly in this range."""
HOLDOUT_FIELDS = 1000
"""Fields of MNIST's holdout digits, as written and unchanged, whose exact reading each epoch reports."""
STRETCH = (0.8, 1.2)
"""Half the batches are stretched across by a factor drawn in this range: hands write wide and narrow."""
MIN_INK = 10
"""An augmented digit with fewer inked pixels than this (a stroke erased away) is written as it was."""


@dataclass
class LineFitConfig:
    """What `digitscan fit --fields` was asked to do."""

    data: Path
    out: Path = Path(LINES_NAME)
    epochs: int = FIT_EPOCHS
    batch_size: int = LINE_BATCH
    lr: float = LINE_LR
    device: str = "auto"
    seed: int = 0
    start: Path | None = None
    scratch: bool = False
    limit: int | None = None
    labeled: Path | None = None
    """The user's labelled scans: their fields (labels of several digits) are trained on too."""
    command: str = ""


class FieldLines(Dataset):
    """Fields written with digits from `pool` (N x 28 x 28, uint8) in the FIELD_LOOKS, as the line
    reader sees them: field k is drawn from seed (`seed`, `part`, k), so a set is the same in any process
    (parts: the training set and the holdout's)."""

    def __init__(self, pool: np.ndarray, labels: np.ndarray, count: int, seed: int, part: int) -> None:
        self.pool, self.labels, self.count, self.seed, self.part = pool, labels, count, seed, part

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[np.ndarray, str]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[np.ndarray, str]]:
        """Each field's line (`_stored`) and text."""
        looks = list(FIELD_LOOKS.values())
        greys, texts = [], []
        for index in indices:
            rng = np.random.default_rng((self.seed, self.part, index))
            length = int(rng.integers(FIELD_LENGTHS[0], FIELD_LENGTHS[1] + 1))
            picks = rng.choice(len(self.labels), size=length, replace=False)
            image = field([self.pool[i] for i in picks], rng, looks[int(rng.integers(len(looks)))])
            greys.append(load_grey(image, FIELD_SIDE))
            texts.append("".join(str(int(self.labels[i])) for i in picks))
        lines = line_images([found.ink for found in find_fields(greys)])
        return [(_stored(line).numpy(), text) for line, text in zip(lines, texts, strict=True)]


def _stored(line: torch.Tensor) -> torch.Tensor:
    """A line as training keeps it: uint8 (a hundred thousand of them fit in memory)."""
    return line.mul(255).round().byte()


def write_fields(fields: FieldLines, what: str) -> list[tuple[torch.Tensor, str]]:
    """Every field of the set (its line as uint8, and its text), written by the loader's processes (as
    arrays: a tensor from a worker would hold a file of shared memory open)."""
    loader = DataLoader(fields, batch_size=64, num_workers=default_workers(), collate_fn=list)
    return [(torch.from_numpy(line), text)
            for batch in tqdm(loader, desc=what, unit="batch", leave=False, dynamic_ncols=True, disable=None)
            for line, text in batch]


@dataclass
class LineFitResult:
    card: dict[str, Any] | None
    """The archive's card; None when interrupted before the first epoch ended."""
    history: list[dict[str, float]]
    interrupted: bool


def fit_lines(cfg: LineFitConfig, log: Callable[[str], None] = print) -> LineFitResult:
    """Train as `cfg` says, writing the archive after every epoch (Ctrl-C keeps the last one)."""
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    net = LineNet()
    if not cfg.scratch:
        source = cfg.start or default_weights(LINES_NAME)
        try:
            net.load_state_dict(open_archive(source, freeze=False).state_dict())
        except RuntimeError:
            raise WeightsError(f"{source}: weights do not fit LineNet (train a new one with --scratch)") from None
        log(f"fine-tuning from {source}")
    net.to(device)
    train, holdout = _fields(cfg, log)
    batches = by_width([line for line, _ in train], cfg.batch_size)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * len(batches),
                                                   pct_start=0.1)
    rng = np.random.default_rng(cfg.seed)
    history: list[dict[str, float]] = []
    card = None
    stop = StopRequest()
    with stop.installed():
        for epoch in range(cfg.epochs):
            tick = time.perf_counter()
            net.train()
            total, done = 0.0, 0
            bar = tqdm(rng.permutation(len(batches)), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                       leave=False, dynamic_ncols=True, disable=None)
            for b in bar:
                loss = _step(net, [train[k] for k in batches[b]], rng, device)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total, done = total + loss.item(), done + 1
                bar.set_postfix(loss=f"{total / done:.4f}")
                if stop.requested:
                    break
            bar.close()
            if stop.requested:
                log(f"interrupted in epoch {epoch + 1}" + (f"; {cfg.out} holds epoch {epoch}" if card else ""))
                return LineFitResult(card, history, interrupted=True)
            history.append({"epoch": epoch + 1, "loss": total / max(done, 1),
                            "holdout_fields": exact_share(net, holdout, device),
                            "seconds": time.perf_counter() - tick})
            last = history[-1]
            log(f"epoch {epoch + 1}: loss {last['loss']:.4f}  holdout fields read exactly {last['holdout_fields']:.4f}"
                f"  ({last['seconds']:.0f} s)")
            card = save_archive(net, cfg.out, _card(cfg, net, history, device, len(train), started))
            net.to(device)
    return LineFitResult(card, history, interrupted=False)


def _fields(cfg: LineFitConfig, log: Callable[[str], None]) -> tuple[list[tuple[torch.Tensor, str]], ...]:
    """The training fields (MNIST's training split less the holdout, each digit augmented once) and the
    holdout's fields (its digits as written)."""
    images, labels = load_mnist(cfg.data, train=True)
    train_x, train_y = images[:-HOLDOUT][: cfg.limit], labels[:-HOLDOUT][: cfg.limit]
    x = train_x.unsqueeze(1).float() / 255
    changed = augment(x, train_y).clamp(0, 1)
    erased = (changed > 0.1).flatten(1).sum(1) < MIN_INK
    changed[erased] = x[erased]
    pool = changed.squeeze(1).mul(255).round().byte().numpy()
    count = FIELDS_PER_DIGIT * len(train_y)
    log(f"writing {count:,} training fields and {min(HOLDOUT_FIELDS, count):,} holdout fields "
        f"from {len(train_y):,} + {HOLDOUT:,} MNIST digits")
    train = write_fields(FieldLines(pool, train_y.numpy(), count, cfg.seed, part=0), "training fields")
    holdout = write_fields(FieldLines(images[-HOLDOUT:].numpy(), labels[-HOLDOUT:].numpy(),
                                      min(HOLDOUT_FIELDS, count), cfg.seed, part=1), "holdout fields")
    if cfg.labeled is not None:
        own = labelled_lines(cfg.labeled, log)
        repeat = max(1, round(LABELLED_SHARE * count / len(own)))
        log(f"added {len(own)} labelled fields from {cfg.labeled}" + (f", each {repeat} times" if repeat > 1 else ""))
        train += own * repeat
    return train, holdout


def labelled_lines(source: Path, log: Callable[[str], None]) -> list[tuple[torch.Tensor, str]]:
    """The fields among the labelled scans (`trainingdata.labelled_files`: those labelled with several
    digits) as the line reader sees them, with their labels; a file that gives no line is skipped, by name."""
    fields = singles_and_fields(labelled_files(source))[1]
    items = ScanDataset([path for path, _ in fields], field=True).__getitems__(range(len(fields)))
    decoded = []
    for (path, label), item in zip(fields, items, strict=True):
        if item.grey is None:
            log(f"skipped {path}: {item.error}")
        else:
            decoded.append((path, label, item.grey[0]))
    found = find_fields([grey for _, _, grey in decoded])
    own = []
    for (path, label, _), one, line in zip(decoded, found, line_images([f.ink for f in found]), strict=True):
        if one.ink is None:
            log(f"skipped {path}: blank (no ink found)")
        else:
            own.append((_stored(line), label))
    if not own:
        raise DataUnavailable(f"{source}: no readable labelled fields (labels of several digits) for the line reader")
    return own


def _step(net: LineNet, fields: list[tuple[torch.Tensor, str]], rng: np.random.Generator,
          device: torch.device) -> torch.Tensor:
    """The CTC loss of one batch, stretched across at random half the time."""
    x, _ = batch_lines([line.float() / 255 for line, _ in fields])
    if rng.random() < 0.5:
        width = max(2 * LINE_STRIDE, int(x.shape[3] * rng.uniform(*STRETCH)) // LINE_STRIDE * LINE_STRIDE)
        x = F.interpolate(x, size=(LINE_HEIGHT, width), mode="bilinear", align_corners=False)
    logs = net(x.to(device)).log_softmax(dim=2).transpose(0, 1)
    targets = torch.tensor([int(c) for _, text in fields for c in text], device=device)
    lengths = torch.tensor([len(text) for _, text in fields], device=device)
    steps = torch.full((len(fields),), logs.shape[0], dtype=torch.long, device=device)
    return F.ctc_loss(logs, targets, steps, lengths, blank=BLANK, zero_infinity=True)


def exact_share(net: torch.nn.Module, fields: list[tuple[torch.Tensor, str]], device: torch.device) -> float:
    """The share of fields whose every digit the reader reads right, and no other."""
    net.eval()
    readings = read_lines(net, [line.float() / 255 for line, _ in fields], device)
    return sum(r.text == text for r, (_, text) in zip(readings, fields, strict=True)) / max(1, len(fields))


def _card(cfg: LineFitConfig, net: torch.nn.Module, history: list[dict[str, float]], device: torch.device,
          count: int, started: float) -> dict[str, Any]:
    """What the archive's JSON card says of how it was made."""
    return {
        "model": "LineNet",
        "parameters": sum(p.numel() for p in net.parameters()),
        "holdout_fields_exact": history[-1]["holdout_fields"],
        "command": cfg.command,
        "trained_on": f"{describe(device)}, {platform.processor() or platform.machine()}",
        "train_seconds": round(sum(h["seconds"] for h in history), 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "train_fields": count,
        "labeled": None if cfg.labeled is None else str(cfg.labeled),
        "epochs": history,
        "steps_per_epoch": math.ceil(count / cfg.batch_size),
        "torch": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
