"""The CNN, and saving/loading it as a TorchScript archive with a JSON card beside it."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import replacing, write_json_atomic
from .defaults import WEIGHTS_NAME
from .errors import DigitscanError

WIDTHS = (16, 32, 64, 64)
"""Channels of DigitNet's four conv blocks."""
HIDDEN = 128
"""Units of its hidden dense layer."""


class DigitNet(nn.Module):
    """A small CNN: conv blocks of WIDTHS channels (5 x 5, then 3 x 3; pooled to 14, 7 and 3 pixels),
    then a HIDDEN-unit head.

    Input: N x 1 x 28 x 28, normalised as in preprocess.py. Output: N x 10 scores, divided by the
    `temperature` that `fit` calibrates (calibration.py), so that their softmax is an honest confidence.
    """

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int, k: int, pool: bool = True) -> list[nn.Module]:
            layers = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return layers + [nn.MaxPool2d(2)] if pool else layers

        c1, c2, c3, c4 = WIDTHS
        self.features = nn.Sequential(*block(1, c1, 5), *block(c1, c2, 3), *block(c2, c3, 3, pool=False),
                                      *block(c3, c4, 3))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c4 * 3 * 3, HIDDEN), nn.ReLU(inplace=True),
                                        nn.Dropout(0.3), nn.Linear(HIDDEN, 10))
        self.register_buffer("temperature", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)) / self.temperature


class WeightsError(DigitscanError):
    """Weights that are missing, unreadable or not a digitscan TorchScript archive."""


def default_weights(name: str = WEIGHTS_NAME) -> Path:
    """The archive shipped inside the installed package (or in ./weights of a source checkout)."""
    packaged = Path(str(resources.files("digitscan"))) / "weights" / name
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parent.parent / "weights" / name


@contextmanager
def quiet_jit() -> Iterator[None]:
    """TorchScript is deprecated upstream but is the archive format digitscan promises: hide that warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(TorchScript|torch\.jit).*")
        yield


def script(model: nn.Module) -> torch.jit.ScriptModule:
    """Compile an eval-mode model with torch.jit.script (kept unfrozen, so it can be fine-tuned)."""
    model = model.eval()
    with quiet_jit():
        return torch.jit.script(model)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def card_path(archive: Path) -> Path:
    return Path(archive).with_suffix(".json")


def save_archive(model: nn.Module, path: Path, card: dict[str, Any]) -> dict[str, Any]:
    """Write the TorchScript archive and its JSON card atomically; return the card."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted = script(model.cpu())
    with replacing(path) as tmp:
        scripted.save(str(tmp))
        card = {**card, "sha256": sha256(tmp)}
    write_json_atomic(card_path(path), card)
    return card


def load_archive(path: Path | None = None, device: torch.device | str = "cpu",
                 freeze: bool = True) -> torch.jit.ScriptModule:
    """Load a DigitNet TorchScript archive (`open_archive`) and check it maps 28x28 to 10 scores."""
    path = Path(path) if path is not None else default_weights()
    model = open_archive(path, device, freeze)
    try:
        with torch.inference_mode():
            out = model(torch.zeros(1, 1, 28, 28, device=device))
    except Exception as exc:
        raise WeightsError(f"{path}: archive does not accept N x 1 x 28 x 28 input ({exc})") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, 10):
        raise WeightsError(f"{path}: archive must return N x 10 scores")
    return model


def open_archive(path: Path, device: torch.device | str = "cpu", freeze: bool = True) -> torch.jit.ScriptModule:
    """Load a TorchScript archive (never unpickles arbitrary objects), in eval mode.

    With `freeze`, the module is frozen for inference (batch norm folded into the convolutions) and,
    on the CPU, optimised for it (oneDNN convolutions: twice the throughput on a 2-core machine).
    """
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        with quiet_jit():
            model = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # torch raises RuntimeError/ValueError/zip errors for non-archives
        raise WeightsError(f"{path}: not a TorchScript archive ({str(exc).splitlines()[0][:120]})") from None
    model.eval()
    if freeze:
        with quiet_jit():
            try:
                cpu = torch.device(device).type == "cpu"
                model = torch.jit.optimize_for_inference(model) if cpu else torch.jit.freeze(model)
            except RuntimeError:
                pass  # already frozen, or not freezable: run it as it is
    return model
