"""Accuracy on the Semeion digits: 1,593 digits by about 80 writers, many in continental forms.

    python bench/semeion.py --data ../shared/semeion
    python bench/semeion.py --weights other.pt --show-errors 20

A development set for measuring, never for training the shipped weights. Each 16 x 16 bitmap is
rendered as a user would hand it over and read back from disk through `digitscan.predict`:

- scaled_x8: dark ink on white, scaled up 8 times (128 x 128) with smooth edges, PNG (the headline)
- bitmap_x4: the same, scaled 4 times by pixel repetition, 1-bit BMP
- original: the 16 x 16 bitmap itself, white ink on black, PNG
- with_margin: scaled_x8 with a white margin of a quarter of the side all round
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from digitscan.scorer import predict

SIDE = 16


def load_semeion(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(bitmaps N x 16 x 16 bool, true: ink; labels N) from semeion.data."""
    rows = np.loadtxt(path)
    return rows[:, : SIDE * SIDE].reshape(-1, SIDE, SIDE) > 0.5, rows[:, SIDE * SIDE:].argmax(axis=1)


def scaled_x8(bits: np.ndarray) -> Image.Image:
    ink = Image.fromarray(np.where(bits, 0, 255).astype(np.uint8))
    return ink.resize((SIDE * 8, SIDE * 8), Image.BILINEAR)


def bitmap_x4(bits: np.ndarray) -> Image.Image:
    return Image.fromarray(np.where(bits, 0, 255).astype(np.uint8)).resize((SIDE * 4,) * 2, Image.NEAREST).convert("1")


def original(bits: np.ndarray) -> Image.Image:
    return Image.fromarray(np.where(bits, 255, 0).astype(np.uint8))


def with_margin(bits: np.ndarray) -> Image.Image:
    inner = scaled_x8(bits)
    pad = inner.width // 4
    out = Image.new("L", (inner.width + 2 * pad, inner.height + 2 * pad), 255)
    out.paste(inner, (pad, pad))
    return out


RENDERS: dict[str, tuple[Callable[[np.ndarray], Image.Image], str]] = {
    "scaled_x8": (scaled_x8, ".png"),
    "bitmap_x4": (bitmap_x4, ".bmp"),
    "original": (original, ".png"),
    "with_margin": (with_margin, ".png"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/semeion", help="folder holding semeion.data")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--renders", default=",".join(RENDERS))
    parser.add_argument("--show-errors", type=int, default=0, metavar="N", help="print N misread digits")
    args = parser.parse_args()

    bits, labels = load_semeion(Path(args.data) / "semeion.data")
    print(f"{'render':12s} {'n':>5s} {'accuracy':>9s} {'blank':>6s} {'inverted':>9s} {'s':>6s}")
    for name in args.renders.split(","):
        render, suffix = RENDERS[name]
        with tempfile.TemporaryDirectory() as folder:
            paths = []
            for k, b in enumerate(bits):
                paths.append(Path(folder) / f"{k:05d}{suffix}")
                render(b).save(paths[-1])
            tick = time.perf_counter()
            results = predict(paths, weights=args.weights, workers=2)
            seconds = time.perf_counter() - tick
        right = np.array([r.digit == t for r, t in zip(results, labels, strict=True)])
        blank = sum(r.status != "ok" for r in results)
        inverted = np.mean([bool(r.inverted) for r in results])
        print(f"{name:12s} {len(labels):5d} {right.mean():9.4f} {blank:6d} {inverted:9.3f} {seconds:6.1f}", flush=True)
        if args.show_errors:
            confusions: dict[tuple[int, int | None], int] = {}
            for r, t in zip(results, labels, strict=True):
                if r.digit != t:
                    confusions[(int(t), r.digit)] = confusions.get((int(t), r.digit), 0) + 1
            top = sorted(confusions.items(), key=lambda kv: -kv[1])[: args.show_errors]
            print("  true->read: " + ", ".join(f"{t}->{p}: {c}" for (t, p), c in top))


if __name__ == "__main__":
    main()
