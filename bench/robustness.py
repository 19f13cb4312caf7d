"""Accuracy on realistic scans: MNIST digits rendered in each style of digitscan.synth, scored end to end.

    python bench/robustness.py --data ../shared/mnist --split holdout   # for tuning (never trained on)
    python bench/robustness.py --data ../shared/mnist --split test      # for reporting

Each scan is written to disk in its style's format (JPEG photos, BMP bitmaps, else PNG) and read
back through `digitscan.predict`, decoding included. Prints, per style, digitscan's accuracy and that
of the seeds' preprocessing (plain 28 x 28 resize, no inversion) with the same weights, and the
expected calibration error of digitscan's confidence (calibration.py), per style and over all.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from digitscan.calibration import calibration_error, reliability
from digitscan.fit import HOLDOUT
from digitscan.model import load_archive
from digitscan.preprocess import MEAN, STD
from digitscan.scorer import predict
from digitscan.synth import SHAPES, STYLES
from digitscan.trainingdata import load_mnist

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from generate import SUFFIX  # noqa: E402  the same file formats as the examples


def save_as_file(img: Image.Image, stem: Path, suffix: str) -> Path:
    """Write a rendered scan as users would have it on disk (JPEG photos, BMP bitmaps, else PNG)."""
    path = stem.with_suffix(suffix)
    if suffix == ".jpg":
        img.convert("RGB").save(path, quality=85)
    else:
        img.save(path)
    return path


def seed_preprocess(img: Image.Image) -> torch.Tensor:
    """The seed tutorials' preprocessing: greyscale, plain resize to 28 x 28, no inversion."""
    a = np.asarray(img.convert("L").resize((28, 28)), dtype=np.float32) / 255.0
    return torch.from_numpy((a - MEAN) / STD).unsqueeze(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/mnist")
    parser.add_argument("--split", choices=["holdout", "test"], default="holdout")
    parser.add_argument("--per-style", type=int, default=1000)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--styles", default=",".join([*STYLES, *SHAPES]))
    args = parser.parse_args()

    images, labels = load_mnist(args.data, train=args.split == "holdout")
    if args.split == "holdout":
        images, labels = images[-HOLDOUT:], labels[-HOLDOUT:]
    model = load_archive(args.weights)
    rng = np.random.default_rng(args.seed)
    print(f"{'style':14s} {'n':>5s} {'digitscan':>10s} {'seed prep':>10s} {'blank':>6s} {'calib err':>10s} {'s':>6s}")
    confidence: list[float] = []
    correct: list[bool] = []
    for name in args.styles.split(","):
        if name in SHAPES:
            digit, style = SHAPES[name]
            among = np.nonzero(labels.numpy() == digit)[0]
        else:
            style, among = STYLES[name], np.arange(len(labels))
        pick = rng.choice(among, size=min(args.per_style, len(among)), replace=False)
        truth = labels[pick].numpy()
        scans = [style(images[i].numpy(), rng) for i in pick]
        with tempfile.TemporaryDirectory() as folder:
            paths = [save_as_file(scan, Path(folder) / f"{k:05d}", SUFFIX.get(name, ".png"))
                     for k, scan in enumerate(scans)]
            tick = time.perf_counter()
            results = predict(paths, weights=args.weights, workers=2)
            seconds = time.perf_counter() - tick
        ours = np.mean([r.digit == t for r, t in zip(results, truth, strict=True)])
        blank = sum(r.status != "ok" for r in results)
        with torch.inference_mode():
            seed_digits = model(torch.stack([seed_preprocess(s) for s in scans])).argmax(1).numpy()
        seeds = np.mean(seed_digits == truth)
        read = [(r.confidence, r.digit == t) for r, t in zip(results, truth, strict=True) if r.confidence is not None]
        confidence += [c for c, _ in read]
        correct += [ok for _, ok in read]
        error = calibration_error(torch.tensor([c for c, _ in read]), torch.tensor([ok for _, ok in read]))
        print(f"{name:14s} {len(truth):5d} {ours:10.4f} {seeds:10.4f} {blank:6d} {error:10.4f} {seconds:6.1f}",
              flush=True)
    confidences, right = torch.tensor(confidence), torch.tensor(correct)
    print(f"{'all styles':14s} {len(correct):5d} {np.mean(correct):10.4f} {'':10s} {'':6s} "
          f"{calibration_error(confidences, right):10.4f}")
    print("\nall styles by confidence:  band       readings  mean confidence  accuracy")
    for b in reliability(confidences, right):
        print(f"{'':26s} {b.low:.2f}-{b.high:.2f} {b.count:9d} {b.confidence:16.4f} {b.accuracy:9.4f}")


if __name__ == "__main__":
    main()
