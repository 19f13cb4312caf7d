from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The MNIST torchvision root: $DIGITSCAN_MNIST, else ../shared/mnist beside the checkout."""
    root = Path(os.environ.get("DIGITSCAN_MNIST", REPO.parent / "shared" / "mnist"))
    if not (root / "MNIST" / "raw").is_dir():
        pytest.fail(f"MNIST not found at {root}: set DIGITSCAN_MNIST to a torchvision MNIST root")
    return root


@pytest.fixture()
def runner() -> Iterator[CliRunner]:
    yield CliRunner()
    gc.unfreeze()  # commands freeze what their imports made (`cli._importing`); tests share one process


def draw_digit(size: tuple[int, int] = (120, 110), ink: int = 20, paper: int = 235, box=None,
               shape: str = "seven") -> Image.Image:
    """A crude hand-drawn-looking digit (a 7, a 1 or a 0) with pen strokes, as a greyscale image."""
    w, h = size
    img = Image.new("L", size, paper)
    d = ImageDraw.Draw(img)
    x0, y0, x1, y1 = box or (int(w * 0.3), int(h * 0.2), int(w * 0.7), int(h * 0.8))
    width = max(2, (y1 - y0) // 8)
    if shape == "seven":
        d.line([(x0, y0), (x1, y0), (x0 + (x1 - x0) // 3, y1)], fill=ink, width=width)
    elif shape == "one":
        d.line([((x0 + x1) // 2, y0), ((x0 + x1) // 2, y1)], fill=ink, width=width)
    else:
        d.ellipse([x0, y0, x1, y1], outline=ink, width=width)
    return img


def grey(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


FPS = 10
SHOWN = 10
"""Frames each digit is held to the camera."""
SHAPES = {"seven": 7, "one": 1, "zero": 0}
SIZE = (160, 120)


def write_clip(path: Path) -> list[int]:
    """Write a clip of each digit in turn, dark on paper, then light on a dark board; return the digit
    shown in each frame."""
    shown = []
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if path.suffix == ".mp4" else "mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        for ink, paper in ((25, 230), (225, 30)):
            for shape, digit in SHAPES.items():
                still = draw_digit(size=SIZE, ink=ink, paper=paper, shape=shape).convert("RGB")
                for _ in range(SHOWN):
                    noise = np.random.default_rng(len(shown)).integers(-6, 7, (*SIZE[::-1], 3))
                    noisy = np.asarray(still, dtype=np.int16) + noise
                    frame = av.VideoFrame.from_image(Image.fromarray(noisy.clip(0, 255).astype(np.uint8)))
                    container.mux(stream.encode(frame))
                    shown.append(digit)
        container.mux(stream.encode())
    return shown
