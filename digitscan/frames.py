"""The 28 x 28 frames the model saw: kept by `run --frames DIR`, shown by `review`.

A frame is stored as DIR/<name>.png, white ink on black as in MNIST, its name a hash of the input's
path as `run` wrote it, so `review` finds it from a results row alone.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .preprocess import FRAME, MEAN, STD


def to_uint8(pixels: torch.Tensor | np.ndarray) -> np.ndarray:
    """A normalised model input (28 x 28, any leading 1s) as 8-bit grey."""
    x = torch.as_tensor(pixels).reshape(FRAME, FRAME).float() * STD + MEAN
    return (x * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def frame_file(folder: Path, path: str) -> Path:
    digest = hashlib.sha1(os.fsencode(path)).hexdigest()[:20]
    return Path(folder) / f"{digest}.png"


def save_frame(folder: Path, path: str, frame: np.ndarray) -> None:
    Image.fromarray(frame, "L").save(frame_file(folder, path))


def load_frame(folder: Path, path: str) -> np.ndarray | None:
    """The frame `run --frames` kept for `path`, or None when there is none (or it is not a frame)."""
    try:
        with Image.open(frame_file(folder, path)) as im:
            frame = np.asarray(im.convert("L"))
    except (OSError, ValueError):
        return None
    return frame if frame.shape == (FRAME, FRAME) else None
