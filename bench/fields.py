"""Whole-field accuracy of `run --field`: fields of 4 and 6 digits written from the MNIST training
holdout (never trained on) and from Semeion, in each kind of `synth.FIELD_LOOKS`.

    python bench/fields.py --data ../shared/mnist --semeion ../shared/semeion
    python bench/fields.py --per-kind 100 --show-errors 5
    python bench/fields.py --weights tuned.pt --line-weights my_lines.pt
    python bench/fields.py --kind touching --per-kind 500 --seed 11   # one kind (other draws than all kinds)
    python bench/fields.py --kind scan --kind touching --lengths 1,2,8,10,14 --per-kind 100 --seed 9

Each field is read as a whole, as `digitscan run --field` reads it, without and with `--digits N`, and
by the segmenter alone (without the line reader: "cut only"); the last lines sum each column's
figures per source, then say how well the fields' confidence is calibrated and how many wrong fields
fall below the summary's threshold (those `review` shows). Also prints the time per field against the
time per single digit (both batched, in one process).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from digitscan.fit import HOLDOUT
from digitscan.report import LOW_CONFIDENCE
from digitscan.scorer import Scorer
from digitscan.synth import FIELD_LOOKS, clean_scan, field
from digitscan.trainingdata import load_mnist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from semeion import load_semeion  # noqa: E402


def semeion_as_mnist(bits: np.ndarray) -> np.ndarray:
    """A 16 x 16 Semeion bitmap as MNIST holds a digit: white on black, 20 px box in 28 x 28."""
    big = Image.fromarray(np.where(bits, 255, 0).astype(np.uint8)).resize((20, 20), Image.Resampling.BILINEAR)
    out = np.zeros((28, 28), dtype=np.uint8)
    out[4:24, 4:24] = np.asarray(big)
    return out


def read(scorer: Scorer, images: list[Image.Image]) -> tuple[list[str], float, list[float]]:
    """The text of each field, the seconds per field, and each field's confidence."""
    tick = time.perf_counter()
    results = [r for batch in scorer.score(images) for r in batch]
    seconds = (time.perf_counter() - tick) / len(images)
    return [r.text or "" for r in results], seconds, [r.confidence or 0.0 for r in results]


def calibration_error(confidences: list[float], right: list[bool]) -> float:
    """Expected calibration error over ten equal bins of confidence."""
    conf, ok = np.array(confidences), np.array(right, dtype=float)
    bins = np.minimum((conf * 10).astype(int), 9)
    return float(sum(abs(conf[bins == b].mean() - ok[bins == b].mean()) * (bins == b).mean()
                     for b in range(10) if (bins == b).any()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/mnist")
    parser.add_argument("--semeion", default="../shared/semeion")
    parser.add_argument("--per-kind", type=int, default=200, help="fields per kind and length")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--show-errors", type=int, default=0, metavar="N")
    parser.add_argument("--weights", default=None, help="an archive other than the shipped weights")
    parser.add_argument("--line-weights", default=None, help="a line reader other than the shipped one")
    parser.add_argument("--lengths", default="4,6", help="digits per field, comma-separated")
    parser.add_argument("--kind", action="append", choices=list(FIELD_LOOKS),
                        help="only this kind of field (repeat for several; default: all)")
    args = parser.parse_args()
    looks = {kind: FIELD_LOOKS[kind] for kind in args.kind or FIELD_LOOKS}

    images, labels = load_mnist(Path(args.data), train=True)
    sources = {"mnist": (images[-HOLDOUT:].numpy(), labels[-HOLDOUT:].numpy())}
    bits, sem_labels = load_semeion(Path(args.semeion) / "semeion.data")
    sources["semeion"] = (np.stack([semeion_as_mnist(b) for b in bits]), sem_labels)
    rng = np.random.default_rng(args.seed)
    print(f"{'digits from':10s} {'kind':14s} {'len':>3s} {'n':>5s} {'cut only':>8s} {'exact':>7s} {'--digits':>8s} "
          f"{'ms/field':>8s}")
    sums: dict[str, np.ndarray] = {}
    confidences: dict[str, list[float]] = {}
    right: dict[str, list[bool]] = {}
    for source, (pool, truth) in sources.items():
        for kind, look in looks.items():
            for length in [int(n) for n in args.lengths.split(",")]:
                picks = [rng.choice(len(truth), size=length, replace=False) for _ in range(args.per_kind)]
                fields = [field([pool[i] for i in pick], rng, look) for pick in picks]
                texts = ["".join(str(int(truth[i])) for i in pick) for pick in picks]
                cut, _, _ = read(Scorer(args.weights, device="cpu", workers=0, field=True, segment_only=True), fields)
                free, seconds, sure = read(Scorer(args.weights, device="cpu", workers=0, field=True,
                                                  line_weights=args.line_weights), fields)
                told, _, _ = read(Scorer(args.weights, device="cpu", workers=0, digits=length,
                                         line_weights=args.line_weights), fields)
                confidences.setdefault(source, []).extend(sure)
                right.setdefault(source, []).extend(a == b for a, b in zip(free, texts, strict=True))
                exact = np.array([np.mean([a == b for a, b in zip(read_, texts, strict=True)])
                                  for read_ in (cut, free, told)])
                sums[source] = sums.get(source, 0) + exact
                print(f"{source:10s} {kind:14s} {length:3d} {len(texts):5d} {exact[0]:8.4f} {exact[1]:7.4f} "
                      f"{exact[2]:8.4f} {seconds * 1000:8.2f}", flush=True)
                wrong = [(t, f) for t, f in zip(texts, free, strict=True) if t != f][: args.show_errors]
                if wrong:
                    print("    true -> read: " + ", ".join(f"{t} -> {f}" for t, f in wrong))
    for source, total in sums.items():
        print(f"{source:10s} {'sum':14s} {'':3s} {'':5s} {total[0]:8.2f} {total[1]:7.2f} {total[2]:8.2f}")
    for source in sums:
        sure, ok = np.array(confidences[source]), np.array(right[source])
        print(f"{source}: fields' confidence, calibration error {calibration_error(list(sure), list(ok)):.4f}; "
              f"{int((~ok & (sure < LOW_CONFIDENCE)).sum())} of {int((~ok).sum())} wrong fields and "
              f"{int((ok & (sure < LOW_CONFIDENCE)).sum())} of {int(ok.sum())} right ones below {LOW_CONFIDENCE}")
    singles = [clean_scan(sources["mnist"][0][i], rng) for i in range(500)]
    _, single, _ = read(Scorer(args.weights, device="cpu", workers=0), singles)
    print(f"single digits (clean_scan), batched: {single * 1000:.2f} ms each")


if __name__ == "__main__":
    main()
