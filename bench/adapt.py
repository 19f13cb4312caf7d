"""Does fine-tuning on a few corrected scans adapt the model to their source?

    python bench/adapt.py --mnist ../shared/mnist --semeion ../shared/semeion
    python bench/adapt.py --sources continental --per-digit 20 --epochs 3

For each source, 20 images of each digit play the corrections a person made on the review page
(written as corrections.csv, path,label); the rest of the source is the measure. Prints accuracy on
the rest with the shipped weights, then after `digitscan fit --labeled corrections.csv` (as a user
runs it, with fit's defaults unless told), and the tuned weights' MNIST test accuracy.

Sources:
- semeion: the Semeion digits (about 80 writers), dark ink on white scaled 4 times, 1-bit BMP.
- continental: MNIST holdout digits (never trained on) written the European way where a digit has
  such a form (flagged 1, crossed 7) and scanned from paper, as one office's forms would be.
- tight: MNIST holdout digits in cells cropped so tightly that the ink touches the borders (the
  synth style tight_crop), as one scanner's cutting would make them.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from semeion import bitmap_x4, load_semeion

from digitscan.evaluate import evaluate_labelled
from digitscan.fit import HOLDOUT, FitConfig, fit
from digitscan.synth import SHAPES, Style, clean_scan, tight_crop
from digitscan.trainingdata import load_mnist


def semeion_source(root: Path) -> Iterator[tuple[Image.Image, int]]:
    bits, labels = load_semeion(root / "semeion.data")
    for b, label in zip(bits, labels, strict=True):
        yield bitmap_x4(b), int(label)


def rendered_source(mnist: Path, styles: dict[int, Style], other: Style, count: int = 2000,
                    seed: int = 3) -> Iterator[tuple[Image.Image, int]]:
    """MNIST holdout digits, each rendered in `styles[digit]`, else in `other`."""
    images, labels = load_mnist(mnist, train=True)
    rng = np.random.default_rng(seed)
    for k in rng.permutation(HOLDOUT)[:count]:
        digit = int(labels[-HOLDOUT + k])
        yield styles.get(digit, other)(images[-HOLDOUT + k].numpy(), rng), digit


def source(name: str, args: argparse.Namespace) -> Iterator[tuple[Image.Image, int]]:
    if name == "semeion":
        return semeion_source(args.semeion)
    if name == "continental":
        return rendered_source(args.mnist, {digit: style for digit, style in SHAPES.values()}, clean_scan)
    return rendered_source(args.mnist, {}, tight_crop)


def write_source(items: Iterator[tuple[Image.Image, int]], folder: Path, per_digit: int,
                 seed: int) -> tuple[Path, Path]:
    """Save the images; the first `per_digit` of each digit (in a seeded order) go to corrections.csv."""
    rows = []
    for k, (img, label) in enumerate(items):
        name = f"scans/{k:05d}.png"
        (folder / "scans").mkdir(parents=True, exist_ok=True)
        img.save(folder / name)
        rows.append((name, label))
    order = np.random.default_rng(seed).permutation(len(rows))
    taken: dict[int, int] = {}
    corrections, rest = [], []
    for k in order:
        name, label = rows[k]
        if taken.get(label, 0) < per_digit:
            taken[label] = taken.get(label, 0) + 1
            corrections.append(rows[k])
        else:
            rest.append(rows[k])
    paths = folder / "corrections.csv", folder / "rest.csv"
    for path, chosen in zip(paths, (corrections, rest), strict=True):
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows([("path", "label"), *chosen])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", type=Path, default=Path("../shared/mnist"))
    parser.add_argument("--semeion", type=Path, default=Path("../shared/semeion"))
    parser.add_argument("--sources", default="semeion,continental,tight")
    parser.add_argument("--per-digit", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=FitConfig.epochs)
    parser.add_argument("--lr", type=float, default=FitConfig.lr)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"{'source':12s} {'rest':>5s} {'before':>7s} {'after':>7s} {'holdout':>7s} {'MNIST test':>10s} {'fit s':>6s}")
    for name in args.sources.split(","):
        items = source(name, args)
        with tempfile.TemporaryDirectory() as tmp:
            corrections, rest = write_source(items, Path(tmp), args.per_digit, args.seed)
            before = evaluate_labelled(rest, workers=2)
            tick = time.perf_counter()
            result = fit(FitConfig(data=args.mnist, out=Path(tmp) / "tuned.pt", labeled=corrections,
                                   epochs=args.epochs, lr=args.lr, seed=args.seed), log=lambda _: None)
            seconds = time.perf_counter() - tick
            after = evaluate_labelled(rest, Path(tmp) / "tuned.pt", workers=2)
        assert result.card is not None
        card = result.card
        print(f"{name:12s} {after.total:5d} {before.accuracy:7.4f} {after.accuracy:7.4f} "
              f"{card['holdout_accuracy']:7.4f} {card['mnist_test_accuracy']:10.4f} {seconds:6.0f}", flush=True)


if __name__ == "__main__":
    main()
