"""Regenerate examples/scans and examples/labels.csv, and examples/fields with its labels.csv, from MNIST
digits (training holdout, never trained on).

    python examples/generate.py --data ../shared/mnist
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from digitscan.fit import HOLDOUT
from digitscan.synth import FIELD_LOOKS, SHAPES, STYLES, field
from digitscan.trainingdata import load_mnist

HERE = Path(__file__).resolve().parent
SUFFIX = {"tinted_photo": ".jpg", "chalkboard": ".jpg", "thin_pen": ".jpg", "cluttered_photo": ".jpg", "bitmap": ".bmp"}
PER_STYLE = 5
FIELD_LENGTHS = (4, 5, 6)
"""Each kind of field is written once with each of these numbers of digits."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="../shared/mnist")
    args = parser.parse_args()
    images, labels = load_mnist(Path(args.data), train=True)
    images, labels = images[-HOLDOUT:], labels[-HOLDOUT:]
    rng = np.random.default_rng(2026)
    out = emptied(HERE / "scans")
    rows: list[tuple[str, object]] = []
    everyone = np.arange(len(labels))
    kinds = [(name, style, everyone) for name, style in STYLES.items()]
    kinds += [(name, style, np.nonzero(labels.numpy() == digit)[0]) for name, (digit, style) in SHAPES.items()]
    for name, style, among in kinds:
        for k in range(PER_STYLE):
            i = int(among[rng.integers(len(among))])
            file = out / f"{name}_{k + 1}{SUFFIX.get(name, '.png')}"
            img = style(images[i].numpy(), rng)
            save(img, file)
            rows.append((f"scans/{file.name}", int(labels[i])))
    # One large phone photo, to show reduced-size decoding of big JPEGs.
    i = int(rng.integers(len(labels)))
    big = STYLES["tinted_photo"](images[i].numpy(), rng).convert("RGB").resize((1200, 1200))
    big.save(out / "large_photo.jpg", quality=85)
    rows.append(("scans/large_photo.jpg", int(labels[i])))
    write_labels(HERE / "labels.csv", "digit", rows)
    print(f"wrote {len(rows)} images to {out}")
    write_fields(images.numpy(), labels.numpy())


def write_fields(images: np.ndarray, labels: np.ndarray) -> None:
    """examples/fields: each kind of field (synth.FIELD_LOOKS) of 4, 5 and 6 digits, and its labels."""
    rng = np.random.default_rng(2027)
    out = emptied(HERE / "fields")
    rows: list[tuple[str, object]] = []
    for name, look in FIELD_LOOKS.items():
        for length in FIELD_LENGTHS:
            pick = rng.choice(len(labels), size=length, replace=False)
            text = "".join(str(int(labels[i])) for i in pick)
            img = field([images[i] for i in pick], rng, look)
            file = out / f"{name}_{length}{'.jpg' if look.photo else '.png'}"
            save(img, file)
            rows.append((file.name, text))
    write_labels(out / "labels.csv", "text", rows)
    print(f"wrote {len(rows)} fields to {out}")


def emptied(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    return folder


def save(img: Image.Image, file: Path) -> None:
    """PNG and BMP as they are; JPEG from RGB at quality 85."""
    if file.suffix == ".jpg":
        img.convert("RGB").save(file, quality=85)
    else:
        img.save(file)


def write_labels(path: Path, column: str, rows: list[tuple[str, object]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["path", column])
        writer.writerows(sorted(rows))


if __name__ == "__main__":
    main()
