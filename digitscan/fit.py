"""`digitscan fit`: train or fine-tune DigitNet on MNIST (and labelled scans), checkpoint every epoch."""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from .atomic import replacing
from .augment import augment, pairs
from .calibration import error_at, fit_temperature, render, scores_of
from .defaults import CALIBRATION_RENDERS, FIT_BATCH, FIT_EPOCHS, FIT_LR
from .devices import describe
from .distributed import Ranks, setup, teardown
from .errors import DigitscanError
from .evaluate import probabilities
from .model import DigitNet, WeightsError, default_weights, load_archive, save_archive, sha256
from .preprocess import normalise
from .stopping import StopRequest
from .trainingdata import load_labelled, load_mnist

HOLDOUT = 5000
"""The last images of MNIST's training split, never trained on; any choice is made on them, not on test."""

AVERAGE_SPAN = 0.3
"""The weights fit reports and writes are an exponential moving average of the trained ones over about
this share of its steps (the last ones weigh most): steadier than the last step's weights."""

LABELLED_SHARE = 0.3
"""--labeled scans are repeated until they number about this share of the MNIST digits of an epoch
(a quarter of what it trains on): the corrections of one source then shape the model (bench/adapt.py)."""
PAIRS = 0.125
"""Each batch also holds this share of its size in pairs of its digits framed as one (`augment.pairs`)..."""
PAIR_WEIGHT = 0.05
"""...whose loss, this weight times how far their scores are from even (the cross-entropy against even
scores, less its least, log 10), teaches the model to be unsure of them (outlier exposure): a field's
touching digits are then cut, not read as one (fields.py), and a cell holding two digits is doubtful."""
DISTIL_TEMPERATURE = 2.0
"""With --teacher, the model's and the teachers' scores are softened by this before they are compared
(knowledge distillation, Hinton et al. 2015): how likely the teachers find the other digits is what they teach..."""
DISTIL_SHARE = 0.5
"""...and this share of the loss on the digits is the divergence from the teachers' mean softened
probabilities (times the temperature squared, so that its gradients keep their size), the rest the labels."""


@dataclass
class FitConfig:
    """What `digitscan fit` was asked to do; the CLI fills it from its flags, and every checkpoint
    keeps it whole (`record`), so `--resume` finishes the same job."""

    data: Path
    out: Path = Path("digitscan.pt")
    epochs: int = FIT_EPOCHS
    batch_size: int = FIT_BATCH
    lr: float = FIT_LR
    device: str = "auto"
    seed: int = 0
    start: Path | None = None
    scratch: bool = False
    resume: Path | None = None
    limit: int | None = None
    labeled: Path | None = None
    command: str = ""
    checkpoint: Path | None = None
    """Written after every epoch. [default: `out` with .ckpt]"""
    calibrate: int = CALIBRATION_RENDERS
    """Held-out renders to fit the confidence temperature on; 0 leaves it at 1."""
    teachers: tuple[Path, ...] = ()
    """Archives whose mean reading of each training digit the model also learns (DISTIL_SHARE)."""

    @property
    def checkpoint_path(self) -> Path:
        return self.checkpoint or Path(self.out).with_suffix(".ckpt")

    def record(self) -> dict[str, Any]:
        """The settings as plain values, paths made absolute (a checkpoint holds nothing else)."""
        values = {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in RUN_ONLY}
        return values | {"checkpoint": _plain(self.checkpoint_path)}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> FitConfig:
        values: dict[str, Any] = {k: Path(v) if k in PATHS and v is not None else v for k, v in record.items()}
        return cls(**values | {"teachers": tuple(Path(t) for t in record.get("teachers", ()))})


PATHS = ("data", "out", "start", "labeled", "checkpoint")
"""The settings that are paths (a record holds them as absolute strings)."""

RUN_ONLY = ("resume", "device")
"""Settings of one sitting, not of the job: a resumed fit may run elsewhere."""

RECORDED = {"data", "out", "epochs", "batch_size", "lr", "seed", "labeled", "command"}
"""What every checkpoint's record holds (settings added since take their defaults when absent)."""


class ResumeConflict(DigitscanError):
    """Flags given with --resume that would change the job it continues."""


def resumed_config(checkpoint: Path, given: dict[str, Any], device: str) -> FitConfig:
    """The settings of the fit that wrote `checkpoint`, to finish it on `device`.

    `given` holds the flags the user typed with --resume (by parameter name): any that differs
    from the job's own is refused, naming them all.
    """
    saved = _load_checkpoint(checkpoint)["config"]
    if not RECORDED <= saved.keys():
        raise WeightsError(f"{checkpoint}: checkpoint does not record its settings (written by an older "
                           "digitscan); start a new fit")
    cfg = FitConfig.from_record(saved)
    conflicts = [f"--{'from' if name == 'start' else name.replace('_', '-')}" for name, value in given.items()
                 if _plain(value) != saved.get(name)]
    if conflicts:
        raise ResumeConflict(f"--resume {checkpoint} continues that fit with its own settings; "
                             f"drop {', '.join(conflicts)} (or start a new fit)")
    cfg.resume, cfg.device, cfg.checkpoint = checkpoint, device, checkpoint
    return cfg


def _plain(value: object) -> Any:
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return str(Path(value).absolute()) if isinstance(value, Path) else value


@dataclass
class FitResult:
    card: dict[str, Any] | None
    """The archive's card; None when interrupted, and on ranks other than the main one."""
    history: list[dict[str, float]]
    checkpoint: Path
    interrupted: bool
    main: bool = True
    """False on the other ranks of a torchrun job, which leave reporting to rank 0."""


def fit(cfg: FitConfig, log: Callable[[str], None] = print,
        on_step: Callable[[int, int], None] | None = None) -> FitResult:
    """Train as `cfg` says and write the archive; `on_step(epoch, step)` is called after each step."""
    started = time.perf_counter()
    state = _load_checkpoint(cfg.resume) if cfg.resume else None
    ranks, device = setup(cfg.device)
    try:
        return _fit(cfg, state, ranks, device, started, log if ranks.main else (lambda _: None), on_step)
    finally:
        teardown(ranks)


@dataclass
class _Data:
    """MNIST's training split less the holdout (plus labelled scans) on the training device, the
    holdout, and the test split (only ever reported)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


@dataclass
class _Epoch:
    """One pass's running figures; `stopped_at` is the next step when Ctrl-C cut it short."""

    seen: int = 0
    correct: int = 0
    loss_sum: float = 0.0
    stopped_at: int | None = None


def _fit(cfg: FitConfig, state: dict[str, Any] | None, ranks: Ranks, device: torch.device, started: float,
         log: Callable[[str], None], on_step: Callable[[int, int], None] | None) -> FitResult:
    torch.manual_seed(cfg.seed + ranks.rank)  # each rank augments differently; data order is shared
    teachers = [load_archive(teacher, device) for teacher in cfg.teachers]
    if teachers:
        log(f"distilling {len(teachers)} teacher{'s' if len(teachers) > 1 else ''}: "
            + ", ".join(str(t) for t in cfg.teachers))
    data = _load_data(cfg, device, log)
    net = DigitNet().to(device)
    if state is None and not cfg.scratch:
        source = cfg.start or default_weights()
        _load_weights(net, load_archive(source, freeze=False).state_dict(), source)
        log(f"fine-tuning from {source}")
    net.get_buffer("temperature").fill_(1.0)  # trained raw; calibrated again at the end
    model = DistributedDataParallel(net) if ranks.world > 1 else net
    shard = len(data.train_y) // ranks.world  # equal shards: every rank takes the same number of steps
    steps = math.ceil(shard / cfg.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps)
    epoch, step, history = 0, 0, []
    if state is not None:
        _load_weights(net, state["model"], cfg.resume)
    decay = 1 - 1 / max(1.0, AVERAGE_SPAN * cfg.epochs * steps)
    average = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    if state is not None:
        average.load_state_dict(state["average"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        epoch, step, history = state["epoch"], state["step"], state["history"]
        if ranks.world == 1:
            torch.set_rng_state(state["rng"])
        log(f"resuming {cfg.resume} at epoch {epoch + 1}, step {step}")

    def save(at_epoch: int, at_step: int) -> None:
        if ranks.main:
            _save_checkpoint(cfg.checkpoint_path, {
                "model": net.state_dict(), "average": average.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "epoch": at_epoch, "step": at_step, "history": history, "rng": torch.get_rng_state(),
                "config": cfg.record()})

    stop = StopRequest()
    with stop.installed():
        while epoch < cfg.epochs:
            tick = time.perf_counter()
            order = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
            order = order[ranks.rank * shard:(ranks.rank + 1) * shard]
            done = _train_one_epoch((model, average), teachers, optimizer, schedule, data, order,
                                    (epoch, step, steps), cfg, device, stop, ranks.main, on_step)
            if done.stopped_at is not None:
                save(epoch, done.stopped_at)
                log(f"interrupted: saved epoch {epoch + 1} step {done.stopped_at}/{steps} to {cfg.checkpoint_path}; "
                    f"continue with --resume {cfg.checkpoint_path}")
                return FitResult(None, history, cfg.checkpoint_path, interrupted=True, main=ranks.main)
            history.append({"epoch": epoch + 1, "loss": done.loss_sum / max(done.seen, 1),
                            "train_acc": done.correct / max(done.seen, 1),
                            "holdout_acc": accuracy(average.module, data.val_x, data.val_y, device),
                            "test_acc": accuracy(average.module, data.test_x, data.test_y, device),
                            "seconds": time.perf_counter() - tick})
            epoch, step = epoch + 1, 0
            save(epoch, 0)
            last = history[-1]
            log(f"epoch {epoch}: loss {last['loss']:.4f}  holdout {last['holdout_acc']:.4f}  "
                f"MNIST test {last['test_acc']:.4f}  ({last['seconds']:.0f} s)")

    if not ranks.main:
        return FitResult(None, history, cfg.checkpoint_path, interrupted=False, main=False)
    net.load_state_dict(average.module.state_dict())
    calibration = _calibrate(net, data, cfg, device, log)
    card = save_archive(net, cfg.out, _card(cfg, net, history, device, ranks, shard * ranks.world, started)
                        | {"calibration": calibration})
    return FitResult(card, history, cfg.checkpoint_path, interrupted=False)


def _load_data(cfg: FitConfig, device: torch.device, log: Callable[[str], None]) -> _Data:
    images, labels = load_mnist(cfg.data, train=True)
    test_x, test_y = load_mnist(cfg.data, train=False)
    train_x, train_y = images[:-HOLDOUT][: cfg.limit], labels[:-HOLDOUT][: cfg.limit]
    if cfg.labeled is not None:
        own_x, own_y, skipped = load_labelled(cfg.labeled, cfg.start)
        for message in skipped:
            log(f"skipped {message}")
        repeat = max(1, round(LABELLED_SHARE * len(train_y) / len(own_y)))
        log(f"added {len(own_y)} labelled scans from {cfg.labeled}" + (f", each {repeat} times" if repeat > 1 else ""))
        train_x = torch.cat([train_x, own_x.repeat(repeat, 1, 1)])
        train_y = torch.cat([train_y, own_y.repeat(repeat)])
    return _Data(train_x.to(device), train_y.to(device), images[-HOLDOUT:], labels[-HOLDOUT:], test_x, test_y)


def _train_one_epoch(models: tuple[torch.nn.Module, AveragedModel], teachers: list[torch.jit.ScriptModule],
                     optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler, data: _Data,
                     order: torch.Tensor, at: tuple[int, int, int], cfg: FitConfig, device: torch.device,
                     stop: StopRequest, main: bool, on_step: Callable[[int, int], None] | None) -> _Epoch:
    """Steps `at` = (epoch, first step, steps) of one pass over `order`, until its end or Ctrl-C; `models`
    are the model trained and the average of its weights, updated after each step."""
    model, average = models
    epoch, first, steps = at
    model.train()
    done = _Epoch()
    bar = tqdm(range(first, steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", initial=first,
               total=steps, leave=False, dynamic_ncols=True, disable=None if main else True)
    for step in bar:
        index = order[step * cfg.batch_size:(step + 1) * cfg.batch_size].to(device)
        y = data.train_y[index]
        x = augment(data.train_x[index].unsqueeze(1).float() / 255, y)
        inputs = normalise(torch.cat([x, pairs(x, round(PAIRS * len(y)))]))
        both = model(inputs)
        scores = both[:len(y)]
        paired = both[len(y):]  # none in a batch of 4 or fewer
        uneven = -F.log_softmax(paired, dim=1).mean() - math.log(both.shape[1]) if len(paired) else both.new_zeros(())
        loss = _digits_loss(scores, y, teachers, inputs[:len(y)]) + PAIR_WEIGHT * uneven
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        average.update_parameters(model)
        done.seen += len(y)
        done.correct += int((scores.argmax(1) == y).sum())
        done.loss_sum += loss.item() * len(y)
        bar.set_postfix(loss=f"{done.loss_sum / done.seen:.4f}", acc=f"{done.correct / done.seen:.4f}")
        if on_step is not None:
            on_step(epoch, step)
        if stop.requested:
            done.stopped_at = step + 1
            break
    bar.close()
    return done


def _digits_loss(scores: torch.Tensor, labels: torch.Tensor, teachers: list[torch.jit.ScriptModule],
                 inputs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the labels, blended with the teachers' softened readings of `inputs` if any."""
    hard = F.cross_entropy(scores, labels)
    if not teachers:
        return hard
    with torch.no_grad():
        taught = torch.stack([(teacher(inputs) / DISTIL_TEMPERATURE).softmax(1) for teacher in teachers]).mean(0)
    soft = F.kl_div(F.log_softmax(scores / DISTIL_TEMPERATURE, dim=1), taught, reduction="batchmean")
    return (1 - DISTIL_SHARE) * hard + DISTIL_SHARE * DISTIL_TEMPERATURE ** 2 * soft


def _calibrate(net: DigitNet, data: _Data, cfg: FitConfig, device: torch.device,
               log: Callable[[str], None]) -> dict[str, Any] | None:
    """Fit the temperature on the holdout digits rendered as scans (calibration.py); None when asked not to."""
    if not cfg.calibrate:
        return None
    net.get_buffer("temperature").fill_(1.0)
    scans, labels = render(data.val_x, data.val_y, cfg.calibrate, seed=cfg.seed)
    scores, labels = scores_of(net, scans, labels, device)
    temperature = fit_temperature(scores, labels)
    errors = [error_at(scores, labels, t) for t in (1.0, temperature)]
    net.get_buffer("temperature").fill_(temperature)
    log(f"calibrated on {len(labels):,} held-out renders: temperature {temperature:.3f}, "
        f"calibration error {errors[0]:.4f} -> {errors[1]:.4f}")
    return {"renders": len(labels), "temperature": round(temperature, 4),
            "error_before": round(errors[0], 5), "error_after": round(errors[1], 5)}


def _card(cfg: FitConfig, net: torch.nn.Module, history: list[dict[str, float]], device: torch.device,
          ranks: Ranks, images: int, started: float) -> dict[str, Any]:
    """What the archive's JSON card says of how it was made."""
    return {
        "model": "DigitNet",
        "parameters": sum(p.numel() for p in net.parameters()),
        "mnist_test_accuracy": history[-1]["test_acc"] if history else None,
        "holdout_accuracy": history[-1]["holdout_acc"] if history else None,
        "command": cfg.command,
        "trained_on": describe(device) + f", {platform.processor() or platform.machine()}"
                      + (f", {ranks.world} processes (torchrun)" if ranks.world > 1 else ""),
        "train_seconds": round(sum(h["seconds"] for h in history), 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "train_images": images,
        "teachers": [{"archive": t.name, "sha256": sha256(t)} for t in cfg.teachers],
        "epochs": history,
        "torch": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    """Share of uint8 MNIST-format images that the model labels correctly."""
    return float((probabilities(model, images, device).argmax(1) == labels).float().mean()) if len(labels) else 0.0


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by fit; never unpickles anything but tensors and plain containers."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a digitscan checkpoint ({str(exc).strip().splitlines()[0][:120]})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: not a digitscan checkpoint (it holds no settings or state)")
    wrong = [key for key, kind in CHECKPOINT_ENTRIES.items() if not isinstance(state.get(key), kind)]
    if wrong:
        raise WeightsError(f"{path}: not a digitscan checkpoint (missing or malformed: {', '.join(wrong)})")
    return state


CHECKPOINT_ENTRIES: dict[str, type | tuple[type, ...]] = {
    "model": dict, "average": dict, "optimizer": dict, "schedule": dict, "epoch": int, "step": int, "history": list,
    "rng": torch.Tensor, "config": dict}
"""What a checkpoint holds, and of what type: anything else is refused in one line."""


def _load_weights(net: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path | None) -> None:
    """Load weights into DigitNet; an archive from before calibration has no temperature, which is fine."""
    try:
        missing, unexpected = net.load_state_dict(weights, strict=False)
    except RuntimeError:
        missing, unexpected = ["(shapes differ)"], []
    if unexpected or set(missing) - {"temperature"}:
        raise WeightsError(f"{source}: weights do not fit DigitNet (train a new model with --scratch)")


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write to a temporary file beside the target, then rename: a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        torch.save(state, tmp)
