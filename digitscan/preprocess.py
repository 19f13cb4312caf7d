"""MNIST's preprocessing for real scans: polarity, background, crop, 20 px box, centre of mass.

Steps, on a greyscale array in [0, 1]:

1. Fit the paper as a plane plus a radial term, starting from the border and leaving the ink out:
   this removes uneven light and vignetting.
2. Decide polarity (`ink_is_dark`): the side of the paper level that holds more ink mass above the
   noise wins. Dark ink on light paper is then inverted, so the digit is white on black as in MNIST.
3. Subtract the noise floor and stretch the contrast, erase ruled lines along the edges (cells cut
   from forms), and call the image blank when no ink is left.
4. Crop to the ink's bounding box, scale the longer side to 20 px keeping the aspect ratio, and place
   it in a 28 x 28 frame with its centre of mass at the centre.
5. Normalise with MNIST's mean and standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

Invert = Literal["auto", "yes", "no"]

BOX, FRAME = 20, 28
MEAN, STD = 0.1307, 0.3081
MIN_CONTRAST = 0.08
"""Ink must differ from the paper by at least this (on a 0..1 scale) after the noise floor."""
MIN_INK_FRACTION = 0.0005
"""...and cover at least this fraction of the image (and 4 pixels), or the image is blank."""


@dataclass(frozen=True)
class Prepared:
    """A preprocessed image: `pixels` is the normalised 28 x 28 array, or None when blank.

    `extent` is the longer side of the ink's bounding box in the input's pixels (0 when blank).
    """

    pixels: np.ndarray | None
    inverted: bool
    extent: int = 0


def prepare(grey: np.ndarray, invert: Invert = "auto") -> Prepared:
    """Turn a greyscale array (values in [0, 1]) into MNIST's 28 x 28 normalised format."""
    residual, noise = _flatten_background(grey)
    inverted = ink_is_dark(residual, noise) if invert == "auto" else invert == "yes"
    ink = -residual if inverted else residual
    ink = np.clip(ink - _ink_floor(noise), 0.0, None)
    peak = float(ink.max()) if ink.size else 0.0
    if peak < MIN_CONTRAST:
        return Prepared(None, inverted)
    ink *= 1.0 / peak
    ink = _drop_ruled_lines(ink)
    strong = int(np.count_nonzero(ink > 0.5))
    if strong < max(4, MIN_INK_FRACTION * ink.size):
        return Prepared(None, inverted)
    box = _crop_to_ink(ink)
    return Prepared(_normalise(_centre(_fit_box(box))), inverted, max(box.shape))


def _flatten_background(grey: np.ndarray) -> tuple[np.ndarray, float]:
    """Residual after removing the paper (a robustly fitted plane plus a radial term), and the noise
    level (robust sigma).

    The fit starts from the border ring, which in a one-digit image is nearly all paper even when
    the ink covers half of the image, then takes in every pixel that lies close to the fitted paper.
    It runs on a grid of about 400 pixels: four parameters need no more.
    """
    h, w = grey.shape
    step = max(1, round(np.sqrt(h * w / 400)))
    sample = grey[::step, ::step]
    values = sample.ravel()
    xs = np.arange(0, w, step, dtype=np.float32) / w
    ys = np.arange(0, h, step, dtype=np.float32) / h
    gx, gy = np.tile(xs, ys.size), np.repeat(ys, xs.size)
    design = np.stack([np.ones(values.size, dtype=np.float32), gx, gy, (gx - 0.5) ** 2 + (gy - 0.5) ** 2])
    ring = np.ones(sample.shape, dtype=bool)
    # A wide ring keeps a form's ruled lines a minority of it; a tight crop needs a thin one.
    r = max(1, min(sample.shape) // (10 if min(h, w) < 40 else 5))
    ring[r:-r, r:-r] = False
    ring = ring.ravel()
    paper = _median(values[ring])
    keep = ring & (np.abs(values - paper) <= max(2.5 * _mad(values[ring]), 0.02))
    coef = np.array([paper, 0.0, 0.0, 0.0])
    noise = 0.0
    for _ in range(2):
        coef = _fit_paper(design[:, keep], values[keep], coef)
        resid = values - coef @ design
        noise = _mad(resid[keep]) if keep.any() else 0.0
        keep = np.abs(resid) <= _ink_floor(noise)
    x = (np.arange(w, dtype=np.float32) / w)[None, :]
    y = (np.arange(h, dtype=np.float32) / h)[:, None]
    paper_level = coef[0] + coef[1] * x + coef[2] * y + coef[3] * ((x - 0.5) ** 2 + (y - 0.5) ** 2)
    return grey - paper_level.astype(np.float32), float(noise)


def _fit_paper(design: np.ndarray, v: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Least squares v = a + b x + c y + d r^2 (design rows: 1, x, y, r^2) by the normal equations.

    The r^2 term takes vignetting and lamp fall-off. einsum (not @): a matrix product goes to
    multithreaded BLAS, whose start-up costs more than these 4 x 400 sums.
    """
    if v.size < 4:
        return fallback
    d = design.astype(np.float64)
    lhs = np.einsum("ik,jk->ij", d, d)
    rhs = np.einsum("ik,k->i", d, v.astype(np.float64))
    try:
        return np.linalg.solve(lhs, rhs)
    except np.linalg.LinAlgError:
        return np.array([float(v.mean()), 0.0, 0.0, 0.0])


def _ink_floor(noise: float) -> float:
    """How far from the paper a pixel must be to count as ink: three sigmas of noise, at least 0.02."""
    return max(3.0 * noise, 0.02)


def _mad(values: np.ndarray) -> float:
    """Robust standard deviation (1.4826 x median absolute deviation)."""
    if values.size == 0:
        return 0.0
    return 1.4826 * _median(np.abs(values - _median(values)))


def _median(values: np.ndarray) -> float:
    """The (upper) median by one partial sort: several times cheaper than np.median on small arrays."""
    k = values.size // 2
    return float(np.partition(values, k)[k])


def ink_is_dark(residual: np.ndarray, noise: float) -> bool:
    """True when the image is dark ink on lighter paper: more ink mass lies below the paper than above."""
    floor = _ink_floor(noise)
    dark = float(np.clip(-residual - floor, 0.0, None).sum())
    light = float(np.clip(residual - floor, 0.0, None).sum())
    return dark > light


def _drop_ruled_lines(ink: np.ndarray) -> np.ndarray:
    """Erase the parts of a form's printed box that a cut cell keeps: straight lines along its edges.

    A ruled line is a run of at most a few rows (or columns) in the outer fifth of the image, each
    inked across at least 90% of it. Tight crops under 40 px are left alone: there a digit's own bar
    can span the frame.
    """
    if min(ink.shape) < 40:
        return ink
    on = ink > 0.3
    for axis in (0, 1):
        coverage = on.mean(axis=1 - axis)
        size = coverage.size
        band = max(2, size // 5)
        for edge in (slice(0, band), slice(size - band, size)):
            lines = np.flatnonzero(coverage[edge] >= 0.9) + edge.start
            if lines.size == 0 or lines.size > max(3, size // 12):
                continue  # no line, or a bar too thick to be a printed rule
            lo, hi = max(0, lines.min() - 1), min(size, lines.max() + 2)  # with the line's soft edges
            if axis == 0:
                ink[lo:hi, :] = 0.0
            else:
                ink[:, lo:hi] = 0.0
    return ink


def _crop_to_ink(ink: np.ndarray, trim: float = 0.005) -> np.ndarray:
    """Crop to the ink's bounding box, ignoring specks that hold under `trim` of the mass at each edge."""
    weights = np.where(ink > 0.2, ink, 0.0)
    rows, cols = weights.sum(axis=1), weights.sum(axis=0)
    r0, r1 = _mass_span(rows, trim)
    c0, c1 = _mass_span(cols, trim)
    return ink[r0:r1 + 1, c0:c1 + 1]


def _mass_span(profile: np.ndarray, trim: float) -> tuple[int, int]:
    cum = np.cumsum(profile)
    total = cum[-1]
    lo = int(np.searchsorted(cum, total * trim, side="right"))
    hi = int(np.searchsorted(cum, total * (1.0 - trim), side="left"))
    return min(lo, hi), max(lo, hi)


def _fit_box(crop: np.ndarray) -> np.ndarray:
    """Scale so the longer side is BOX pixels, keeping the aspect ratio, and restore full contrast."""
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = Image.fromarray(np.ascontiguousarray(crop, dtype=np.float32), mode="F")
    box = np.asarray(img.resize(size, Image.BILINEAR), dtype=np.float32)
    top = float(box.max())
    return np.clip(box * (1.0 / top), 0.0, 1.0) if top > 0 else box


def _centre(box: np.ndarray) -> np.ndarray:
    """Place in a FRAME x FRAME array with the centre of mass at the centre (integer shift)."""
    h, w = box.shape
    total = float(box.sum())
    cy = float((box.sum(axis=1) * (np.arange(h) + 0.5)).sum()) / total
    cx = float((box.sum(axis=0) * (np.arange(w) + 0.5)).sum()) / total
    top = min(max(int(round(FRAME / 2 - cy)), 0), FRAME - h)
    left = min(max(int(round(FRAME / 2 - cx)), 0), FRAME - w)
    frame = np.zeros((FRAME, FRAME), dtype=np.float32)
    frame[top:top + h, left:left + w] = box
    return frame


def _normalise(frame: np.ndarray) -> np.ndarray:
    return (frame - MEAN) * (1.0 / STD)
