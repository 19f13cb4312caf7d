"""`digitscan fit`: train or fine-tune DigitNet on MNIST (and labelled scans), checkpoint every epoch."""

from __future__ import annotations

import contextlib
import math
import platform
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .augment import augment, normalise
from .devices import describe
from .distributed import Ranks, setup, teardown
from .evaluate import predict_tensors
from .model import DigitNet, WeightsError, default_weights, load_archive, replacing, save_archive
from .trainingdata import load_labelled, load_mnist

HOLDOUT = 5000
"""The last images of MNIST's training split, never trained on; any choice is made on them, not on test."""

LABELLED_SHARE = 0.1
"""--labeled scans are repeated until they make up about this share of an epoch."""

# Settings that shape the run; on --resume they come from the checkpoint, not from the command line.
SCHEDULE_KEYS = ("epochs", "batch_size", "lr", "seed", "limit")


@dataclass
class FitConfig:
    """What `digitscan fit` was asked to do; the CLI fills it from its flags."""

    data: Path
    out: Path = Path("digitscan.pt")
    epochs: int = 5
    batch_size: int = 128
    lr: float = 3e-3
    device: str = "auto"
    seed: int = 0
    start: Path | None = None
    scratch: bool = False
    resume: Path | None = None
    limit: int | None = None
    labeled: Path | None = None
    command: str = ""
    checkpoint: Path = field(default=Path(""))

    def __post_init__(self) -> None:
        if self.checkpoint == Path(""):
            self.checkpoint = Path(self.out).with_suffix(".ckpt")


@dataclass
class FitResult:
    card: dict[str, Any] | None
    """The archive's card; None when interrupted, and on ranks other than the main one."""
    history: list[dict[str, float]]
    checkpoint: Path
    interrupted: bool
    main: bool = True
    """False on the other ranks of a torchrun job, which leave reporting to rank 0."""


class _StopRequest:
    """Turns Ctrl-C (SIGINT) into a flag that the loop checks between steps."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        try:
            previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: no handler, Ctrl-C is not ours to catch
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True


def fit(cfg: FitConfig, log: Callable[[str], None] = print,
        on_step: Callable[[int, int], None] | None = None) -> FitResult:
    """Train as `cfg` says and write the archive; `on_step(epoch, step)` is called after each step."""
    started = time.perf_counter()
    state = _load_checkpoint(cfg.resume) if cfg.resume else None
    if state is not None:
        for key in SCHEDULE_KEYS:
            setattr(cfg, key, state["config"][key])
    ranks, device = setup(cfg.device)
    try:
        return _fit(cfg, state, ranks, device, started, log if ranks.main else (lambda _: None), on_step)
    finally:
        teardown(ranks)


def _fit(cfg: FitConfig, state: dict[str, Any] | None, ranks: Ranks, device: torch.device, started: float,
         log: Callable[[str], None], on_step: Callable[[int, int], None] | None) -> FitResult:
    torch.manual_seed(cfg.seed + ranks.rank)  # each rank augments differently; data order is shared

    images, labels = load_mnist(cfg.data, train=True)
    test_x, test_y = load_mnist(cfg.data, train=False)
    val_x, val_y = images[-HOLDOUT:], labels[-HOLDOUT:]
    train_x, train_y = images[:-HOLDOUT][: cfg.limit], labels[:-HOLDOUT][: cfg.limit]
    if cfg.labeled is not None:
        own_x, own_y, skipped = load_labelled(cfg.labeled)
        for message in skipped:
            log(f"skipped {message}")
        # A few dozen scans would vanish among 55,000 MNIST digits: repeat them to a tenth of an epoch.
        repeat = max(1, round(LABELLED_SHARE * len(train_y) / len(own_y)))
        log(f"added {len(own_y)} labelled scans from {cfg.labeled}" + (f", each {repeat} times" if repeat > 1 else ""))
        train_x = torch.cat([train_x, own_x.repeat(repeat, 1, 1)])
        train_y = torch.cat([train_y, own_y.repeat(repeat)])
    train_x, train_y = train_x.to(device), train_y.to(device)

    net = DigitNet().to(device)
    if state is None and not cfg.scratch:
        source = cfg.start or default_weights()
        _load_weights(net, load_archive(source, freeze=False).state_dict(), source)
        log(f"fine-tuning from {source}")
    model = DistributedDataParallel(net) if ranks.world > 1 else net
    shard = len(train_y) // ranks.world  # equal shards: every rank takes the same number of steps
    steps = math.ceil(shard / cfg.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps)
    epoch, step, history = 0, 0, []
    if state is not None:
        _load_weights(net, state["model"], cfg.resume)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        epoch, step, history = state["epoch"], state["step"], state["history"]
        if ranks.world == 1:
            torch.set_rng_state(state["rng"])
        log(f"resuming {cfg.resume} at epoch {epoch + 1}, step {step}")

    def save(at_epoch: int, at_step: int) -> None:
        if not ranks.main:
            return
        _save_checkpoint(cfg.checkpoint, {
            "model": net.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "epoch": at_epoch, "step": at_step, "history": history, "rng": torch.get_rng_state(),
            "config": {k: getattr(cfg, k) for k in SCHEDULE_KEYS}})

    stop = _StopRequest()
    with stop.installed():
        while epoch < cfg.epochs:
            tick = time.perf_counter()
            order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
            order = order[ranks.rank * shard:(ranks.rank + 1) * shard]
            model.train()
            seen = correct = 0
            loss_sum = 0.0
            bar = tqdm(range(step, steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                       initial=step, total=steps, leave=False, dynamic_ncols=True,
                       disable=None if ranks.main else True)
            for step in bar:
                index = order[step * cfg.batch_size:(step + 1) * cfg.batch_size].to(device)
                y = train_y[index]
                x = normalise(augment(train_x[index].unsqueeze(1).float() / 255, y))
                scores = model(x)
                loss = F.cross_entropy(scores, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                seen += len(y)
                correct += int((scores.argmax(1) == y).sum())
                loss_sum += loss.item() * len(y)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
                if on_step is not None:
                    on_step(epoch, step)
                if stop.requested:
                    bar.close()
                    save(epoch, step + 1)
                    log(f"interrupted: saved epoch {epoch + 1} step {step + 1}/{steps} to {cfg.checkpoint}; "
                        f"continue with --resume {cfg.checkpoint}")
                    return FitResult(None, history, cfg.checkpoint, interrupted=True, main=ranks.main)
            bar.close()
            history.append({"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                            "holdout_acc": accuracy(net, val_x, val_y, device),
                            "test_acc": accuracy(net, test_x, test_y, device),
                            "seconds": time.perf_counter() - tick})
            epoch, step = epoch + 1, 0
            save(epoch, 0)
            last = history[-1]
            log(f"epoch {epoch}: loss {last['loss']:.4f}  holdout {last['holdout_acc']:.4f}  "
                f"MNIST test {last['test_acc']:.4f}  ({last['seconds']:.0f} s)")

    if not ranks.main:
        return FitResult(None, history, cfg.checkpoint, interrupted=False, main=False)
    card = {
        "model": "DigitNet",
        "parameters": sum(p.numel() for p in net.parameters()),
        "mnist_test_accuracy": history[-1]["test_acc"] if history else None,
        "holdout_accuracy": history[-1]["holdout_acc"] if history else None,
        "command": cfg.command,
        "trained_on": describe(device) + f", {platform.processor() or platform.machine()}"
                      + (f", {ranks.world} processes (torchrun)" if ranks.world > 1 else ""),
        "train_seconds": round(sum(h["seconds"] for h in history), 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "train_images": shard * ranks.world,
        "epochs": history,
        "torch": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    card = save_archive(net, cfg.out, card)
    return FitResult(card, history, cfg.checkpoint, interrupted=False)


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    """Share of uint8 MNIST-format images that the model labels correctly."""
    return float((predict_tensors(model, images, device) == labels).float().mean()) if len(labels) else 0.0


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by fit; never unpickles anything but tensors and plain containers."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a digitscan checkpoint ({str(exc).strip().splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "schedule", "config"} <= state.keys():
        raise WeightsError(f"{path}: not a digitscan checkpoint (missing model, optimiser or schedule state)")
    return state


def _load_weights(net: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path | None) -> None:
    try:
        net.load_state_dict(weights)
    except RuntimeError:
        raise WeightsError(f"{source}: weights do not fit DigitNet (train a new model with --scratch)") from None


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write to a temporary file beside the target, then rename: a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        torch.save(state, tmp)
