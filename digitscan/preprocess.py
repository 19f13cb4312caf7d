"""MNIST's preprocessing for real scans, a batch at a time: polarity, background, crop, 20 px box, centre of mass.

Steps, on greyscale images with values in [0, 1]:

1. Fit the paper as a plane plus a radial term, starting from the border and leaving the ink out:
   this removes uneven light and vignetting.
2. Decide polarity (`ink_is_dark`): the side of the paper level that holds more ink mass above the
   noise wins. Dark ink on light paper is then inverted, so the digit is white on black as in MNIST.
3. Subtract the noise floor and stretch the contrast, erase ruled lines along the edges (cells cut
   from forms) and clutter running along an edge (a floor around a photographed sheet, of which only
   the strong ink nearest the middle is then kept), and call the image blank when no ink is left.
4. Crop to the ink's bounding box, scale the longer side to 20 px keeping the aspect ratio (the
   antialiased bilinear filter of PIL's resize), and place it in a 28 x 28 frame with its centre of
   mass at the centre.
5. Normalise with MNIST's mean and standard deviation.

Every step is a tensor operation over the whole batch: images of similar size are padded into one
canvas and carry their own height and width, so a batch of 256 costs about as many Python calls as
one image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

Invert = Literal["auto", "yes", "no"]
Grey = np.ndarray | torch.Tensor
"""A greyscale image, H x W: uint8, or floats in [0, 1]."""

BOX, FRAME = 20, 28
MEAN, STD = 0.1307, 0.3081
MIN_CONTRAST = 0.08
"""Ink must differ from the paper by at least this (on a 0..1 scale) after the noise floor."""
MIN_INK_FRACTION = 0.0005
"""...and cover at least this fraction of the image (and 4 pixels), or the image is blank."""
FIT_POINTS = 400
"""The paper is fitted on a grid of about this many pixels: four parameters need no more."""
UNSURE_SPREAD = 0.3
"""A paper level whose spread passes this share of the image's contrast is no level at all..."""
TONE_QUANTILES = (0.02, 0.98)
"""...and the contrast runs between these quantiles of the image."""
DEPTH_STEPS = 6
"""Erosions that measure how thick each tone is, on the paper fit's grid."""
PIECE_SHARE = 0.03
"""A connected piece of one tone counts when it holds this share of the paper fit's grid."""
PAPER_MIN_DEPTH = 0.15
"""A tone thinner than this (erosions survived on average, on the fit's grid) is strokes, not paper."""
TIGHT_SIDES = 3
"""A steady dark level may be a tight crop's ink when both tones reach at least this many of the four
edges (on the paper fit's coarse grid, a stroke's tip touching an edge can fall between grid points)."""
LINE_SHARE = 24
"""A ruled line is at most 1/LINE_SHARE of the image thick (and 3 px): a digit's own bar is thicker..."""
LINE_EDGE = 0.5
"""...counting the rows beside it inked across this share of the image (but a soft edge each side)."""
FAINT_INK = 0.2
"""Ink (of the image's strongest) below this counts for nothing where the digit is located."""
CLUTTER_GRID = 64
"""Clutter along the border is traced on a grid of at most this many points a side..."""
CLUTTER_EDGE = 2
"""...where ink within this many points of the border lies on an edge..."""
CLUTTER_SPAN = 0.5
"""...and is clutter when it runs along at least this share of one edge..."""
CLUTTER_BAND = 0.3
"""...or when the ink connected to an edge stays within this share of the image from the edges...
(a tiled floor, whose grout lines only cross the border, and the grid behind them)"""
CLUTTER_FULL = 0.9
"""...and spans at least this share of an edge within that band."""
CLUTTER_GAP = 0.08
"""...and other ink lies further than this share of the grid away from it."""
PIECE_REACH = 0.25
"""In a cluttered photo, ink within this share of the digit's size of the piece taken for it is the digit's too."""
STRONG_INK = 0.5
"""Ink (of the image's strongest) above this is strong: a digit's strokes rather than shading or clutter."""
SHADE_RADIUS = 1 / 16
"""At the second look, ink that survives an opening this share of the image's shorter side wide (and
SHADE_STROKES times the strokes' half width) is shading broader than any stroke: a shadow, a vignette..."""
SHADE_STROKES = 3
"""...(three times the strokes' half width keeps a thick pen's filled loops)."""
GROUP = 16
"""Images whose sides round up to the same multiple of this share a canvas..."""
CANVAS_PIXELS = 1 << 23
"""...of at most this many pixels (or one image): that bounds the memory a batch of large images takes."""


@dataclass(frozen=True)
class Prepared:
    """One preprocessed image: `pixels` is the normalised 28 x 28 array, or None when blank.

    `box` is the ink's bounding box in the input's pixels (left, top, right, bottom, inclusive; all 0
    when blank) and `extent` its longer side (0 when blank).
    """

    pixels: np.ndarray | None
    inverted: bool
    box: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def extent(self) -> int:
        return 0 if self.pixels is None else max(self.box[2] - self.box[0], self.box[3] - self.box[1]) + 1


@dataclass(frozen=True)
class PreparedBatch:
    """A preprocessed batch: N x 28 x 28 `pixels` (rows where `blank` is true are zeros), and per image
    `inverted`, `blank` and `box` (N x 4; as in Prepared)."""

    pixels: torch.Tensor
    inverted: torch.Tensor
    blank: torch.Tensor
    box: torch.Tensor

    def __getitem__(self, i: int) -> Prepared:
        blank = bool(self.blank[i])
        left, top, right, bottom = self.box[i].tolist()
        return Prepared(None if blank else self.pixels[i].numpy(), bool(self.inverted[i]), (left, top, right, bottom))


def prepare(grey: np.ndarray, invert: Invert = "auto") -> Prepared:
    """Turn one greyscale array (floats in [0, 1], or uint8) into MNIST's 28 x 28 normalised format."""
    return prepare_batch([grey], invert)[0]


def prepare_batch(greys: Sequence[Grey], invert: Invert = "auto", second_look: bool = False) -> PreparedBatch:
    """Prepare greyscale arrays of any sizes together (see the module's steps). It runs on the default
    device (`with torch.device("cuda"):` runs it on a GPU), whatever device the arrays are on.

    `second_look`: the images are photos (or large scans) whose digit was small at the first look
    (`dataset.look_again`), read again closer: shading and what clutter is left are removed too."""
    n = len(greys)
    out = PreparedBatch(torch.zeros(n, FRAME, FRAME), torch.zeros(n, dtype=torch.bool),
                        torch.ones(n, dtype=torch.bool), torch.zeros(n, 4, dtype=torch.long))
    for chunk, canvas, h, w in _canvases(greys):
        ink, inverted, blank = _ink(canvas, h, w, invert, second_look=second_look)
        framed, box = frame(ink)
        rows = torch.tensor(chunk)
        out.pixels[rows], out.inverted[rows], out.blank[rows] = normalise(framed), inverted, blank
        out.box[rows] = torch.where(blank.view(-1, 1), 0, box)
    return out


def ink_batch(greys: Sequence[Grey], invert: Invert = "auto",
              edges: bool = True) -> list[tuple[torch.Tensor, bool, bool]]:
    """Steps 1 to 3 only: for each image, its ink (H x W, 0 paper to 1 ink, white on black whatever
    the polarity), whether it was inverted, and whether it is blank. For fields of several digits;
    `edges` False keeps ruled lines and clutter along the edges."""
    out: list[tuple[torch.Tensor, bool, bool]] = [(torch.empty(0, 0), False, True)] * len(greys)
    for chunk, canvas, h, w in _canvases(greys):
        ink, inverted, blank = _ink(canvas, h, w, invert, edges)
        for k, i in enumerate(chunk):
            out[i] = (ink[k, :int(h[k]), :int(w[k])], bool(inverted[k]), bool(blank[k]))
    return out


def _canvases(greys: Sequence[Grey]) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The images padded into canvases of similar sizes: (their indices, canvas, heights, widths)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, g in enumerate(greys):
        groups.setdefault((_grouped(g.shape[0]), _grouped(g.shape[1])), []).append(i)
    for members in groups.values():
        area = max(greys[i].shape[0] for i in members) * max(greys[i].shape[1] for i in members)
        step = max(1, CANVAS_PIXELS // area)
        for start in range(0, len(members), step):
            chunk = members[start:start + step]
            yield chunk, *padded([greys[i] for i in chunk])


def _grouped(side: int) -> int:
    """A side rounded up to a multiple of GROUP: images of one canvas share it, so what is measured on a
    grid sized by it (the paper fit's, the clutter's) is the same whichever images share the canvas."""
    return -(-side // GROUP) * GROUP


def padded(greys: Sequence[Grey]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One zero-padded N x H x W canvas of values in [0, 1] (images at the top left), with each image's
    height and width."""
    h = torch.tensor([g.shape[0] for g in greys])
    w = torch.tensor([g.shape[1] for g in greys])
    if all(isinstance(g, torch.Tensor) and g.shape == greys[0].shape and g.dtype == greys[0].dtype for g in greys):
        canvas = torch.stack(list(greys)).to(device=h.device, dtype=torch.float32)  # type: ignore[arg-type]
    else:
        canvas = torch.zeros(len(greys), int(h.max()), int(w.max()))
        _fill(canvas, greys)
    scale = torch.tensor([1.0 / 255.0 if g.dtype in (np.uint8, torch.uint8) else 1.0 for g in greys])
    return canvas.mul_(scale.view(-1, 1, 1)), h, w


def _fill(canvas: torch.Tensor, greys: Sequence[Grey]) -> None:
    """Copy images of several sizes into the top left of the canvas's slices."""
    if canvas.device.type == "cpu":
        filling = canvas.numpy()
        for k, g in enumerate(greys):
            filling[k, :g.shape[0], :g.shape[1]] = np.asarray(g)
    else:
        for k, g in enumerate(greys):
            canvas[k, :g.shape[0], :g.shape[1]] = torch.as_tensor(g)


def _ink(x: torch.Tensor, h: torch.Tensor, w: torch.Tensor, invert: Invert, edges: bool = True,
         second_look: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steps 1 to 3 on one padded canvas: the ink (0 to 1), inverted and blank per image."""
    n, height, width = x.shape
    across, down, noise = _fit_paper_level(x, h, w, invert)
    floor = _ink_floor(noise)
    # Distance from the paper in units of the ink floor; softshrink keeps what lies beyond it, signed.
    unit = (1.0 / floor).view(n, 1, 1)
    beyond = F.softshrink((x * unit).sub_(across * unit).sub_(down * unit), 1.0)
    if bool((h < height).any() or (w < width).any()):
        beyond.mul_(_inside(h, height).unsqueeze(2)).mul_(_inside(w, width).unsqueeze(1))
    if invert == "auto":
        inverted = ink_is_dark(beyond)
    else:
        inverted = torch.full((n,), invert == "yes")
    ink = beyond.mul_(torch.where(inverted, -1.0, 1.0).view(n, 1, 1)).clamp_(min=0.0)
    peak = ink.amax(dim=(1, 2))
    blank = peak * floor < MIN_CONTRAST
    ink.div_(peak.clamp(min=1e-12).view(n, 1, 1))
    if edges:
        ink = _drop_border_clutter(_drop_ruled_lines(ink, h, w), h, w)
    if second_look:
        ink = _keep_digit(_drop_shading(ink, h, w), h, w)
    strong = (ink > STRONG_INK).sum(dim=(1, 2), dtype=torch.int32)
    blank |= strong < torch.clamp(MIN_INK_FRACTION * h * w, min=4.0)
    return ink, inverted, blank


def frame(ink: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's frame for N x H x W ink images (0 paper, 1 ink): crop to the ink, fit the crop's longer
    side to BOX pixels keeping the aspect ratio, centre it by mass in FRAME x FRAME (values 0 to 1).

    Also returns each crop's box in input pixels: N x 4, left, top, right, bottom (inclusive).
    """
    weights = F.threshold(ink, FAINT_INK, 0.0)
    r0, r1 = _mass_span(weights.sum(dim=2))
    c0, c1 = _mass_span(weights.sum(dim=1))
    return _centre(*_fit_box(ink, r0, r1, c0, c1)), torch.stack([c0, r0, c1, r1], dim=1)


def _inside(size: torch.Tensor, length: int) -> torch.Tensor:
    """N x length: 1.0 at the indices inside each image's `size`, 0.0 in the padding."""
    return (torch.arange(length).view(1, length) < size.view(-1, 1)).float()


def _fit_paper_level(x: torch.Tensor, h: torch.Tensor, w: torch.Tensor,
                     invert: Invert = "auto") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The paper level, a robustly fitted plane plus a radial term, as its two separable parts
    (N x 1 x W across the columns, N x H x 1 down the rows), and each image's noise level (robust sigma).

    The fit starts from the border ring, which in a one-digit image is nearly all paper, or from the
    whole image when that is steadier (a tight crop); when neither is steady, or the two disagree on the
    paper's tone, from the thicker of the two tones, or in a tight crop the one in more pieces (with
    --invert, the tone it names); a tight crop's light tone in more pieces also overrules a steady dark
    level. It then takes in every pixel that lies close to the fitted paper.
    It runs on a grid of about FIT_POINTS pixels.
    """
    n, height, width = x.shape
    step = max(1, round(math.sqrt(_grouped(height) * _grouped(width) / FIT_POINTS)))
    iy = torch.arange(0, height, step).view(1, -1, 1)
    ix = torch.arange(0, width, step).view(1, 1, -1)
    values = x[:, ::step, ::step].reshape(n, -1)
    inside = ((iy < h.view(n, 1, 1)) & (ix < w.view(n, 1, 1))).reshape(n, -1)
    gy = (iy / h.view(n, 1, 1)).expand(n, iy.shape[1], ix.shape[2])
    gx = (ix / w.view(n, 1, 1)).expand(n, iy.shape[1], ix.shape[2])
    design = torch.stack([torch.ones_like(gx), gx, gy, (gx - 0.5) ** 2 + (gy - 0.5) ** 2], dim=1).reshape(n, 4, -1)

    # The ring: a wide one keeps a form's ruled lines a minority of it; a tight crop needs a thin one.
    sh, sw = ((h + step - 1) // step).view(n, 1, 1), ((w + step - 1) // step).view(n, 1, 1)
    r = torch.clamp(torch.minimum(sh, sw) // torch.where(torch.minimum(h, w) < 40, 10, 5).view(n, 1, 1), min=1)
    gi, gj = iy // step, ix // step
    inner = (gi >= r) & (gi < sh - r) & (gj >= r) & (gj < sw - r)
    ring = inside & ~inner.reshape(n, -1)

    # A tight crop's ring is mostly ink: then the whole image, where the paper is the steadier level, starts the fit.
    ring_paper, spread = _level(values, ring)
    whole_paper, whole_spread = _level(values, inside)
    steadier = (whole_spread <= spread)[:, None]
    paper = torch.where(steadier[:, 0], whole_paper, ring_paper)
    spread = torch.minimum(spread, whole_spread)
    deviation = (values - paper[:, None]).abs()
    keep = torch.where(steadier, inside, ring) & (deviation <= torch.clamp(2.5 * spread, min=0.02)[:, None])
    # When ink covers about half of the crop, no level is steady, or the whole image's level (the ink's) and
    # the ring's (the paper's) disagree: the paper is then chosen by shape (`_paper_tone`), or is the tone
    # that --invert names. A steady dark level is redone the same way when the shapes of a tight crop
    # (or --invert) say that the paper is the light tone.
    low, high = _quantiles(values, inside, TONE_QUANTILES)
    mid = (low + high) / 2
    light = values > mid[:, None]
    retone = spread > UNSURE_SPREAD * (high - low)
    contrast = high - low > MIN_CONTRAST
    if invert == "auto":
        retone |= steadier[:, 0] & contrast & ((ring_paper > mid) != (whole_paper > mid))
        light_is_paper, overruled = _paper_tone(light, retone, contrast & (paper <= mid), inside, (gi, gj, sh, sw))
        retone |= overruled
    else:
        retone |= (paper > mid) != (invert == "yes")
        light_is_paper = torch.full((n,), invert == "yes")
    if bool(retone.any()):
        tone = inside & (light == light_is_paper[:, None])
        keep = torch.where(retone[:, None], tone, keep)
        paper = torch.where(retone, _median(values, tone), paper)
    coef = torch.zeros(n, 4)
    coef[:, 0] = paper
    noise = torch.zeros(n)
    for _ in range(2):
        coef = _fit_paper(design, values, keep, coef)
        resid = values - torch.bmm(coef.unsqueeze(1), design).squeeze(1)
        noise = 1.4826 * _median((resid - _median(resid, keep)[:, None]).abs(), keep)
        keep = inside & (resid.abs() <= _ink_floor(noise)[:, None])

    fx = torch.arange(width).view(1, width) / w.view(n, 1)
    fy = torch.arange(height).view(1, height) / h.view(n, 1)
    across = coef[:, :1] + coef[:, 1:2] * fx + coef[:, 3:] * (fx - 0.5) ** 2
    down = coef[:, 2:3] * fy + coef[:, 3:] * (fy - 0.5) ** 2
    return across.unsqueeze(1), down.unsqueeze(2), noise


def _level(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The median of the masked values and their robust spread (1.4826 median absolute deviations)."""
    level = _median(values, mask)
    return level, 1.4826 * _median((values - level[:, None]).abs(), mask)


def _quantiles(values: torch.Tensor, mask: torch.Tensor, q: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's q[0] and q[1] quantiles over its masked values."""
    both = torch.where(mask, values, torch.nan).nanquantile(torch.tensor(q), dim=1).nan_to_num(0.0)
    return both[0], both[1]


def _depth(mask: torch.Tensor, inside: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Mean depth of each image's masked grid points: how many erosions they survive (up to DEPTH_STEPS).

    Strokes are a few points deep; the paper around or between them is deeper. The image's border
    does not erode.
    """
    m = (mask | ~inside).view(grid).float().unsqueeze(1)
    count = (mask & inside).sum(dim=1).clamp(min=1)
    depth = torch.zeros(grid[0])
    for _ in range(DEPTH_STEPS):
        m = 1.0 - spread(1.0 - m)  # erosion; beyond the border counts as ink
        depth += (m.view(grid[0], -1) * inside).sum(dim=1)
    return depth / count


def _paper_tone(light: torch.Tensor, unsure: torch.Tensor, dark_fit: torch.Tensor, inside: torch.Tensor,
                at: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether each image's light tone (grid points in `light`) is its paper, judged by shape, for the
    images whose level fit is `unsure`: the thicker tone; but in a tight crop, where both tones reach
    all four edges, the tone in more pieces (the digit's ink is one piece; the paper falls into corners
    and loops, however thick the strokes).

    Also which `dark_fit` images (a steady level on the dark tone: the heavy ink of a dark-on-light
    tight crop can be its steadiest level) that rule overrules, where both tones reach TIGHT_SIDES
    edges, the light tone is in more pieces and no mere strokes (as the broken strokes of light ink can
    be). `at` holds the grid's row and column indices and each grid's height and width.
    """
    gi, gj, sh, sw = at
    n, gh, gw = len(light), gi.shape[1], gj.shape[2]
    inside_grid = inside.view(n, gh, gw)
    sides = [(gi == 0) & inside_grid, (gi == sh - 1) & inside_grid, (gj == 0) & inside_grid,
             (gj == sw - 1) & inside_grid]
    edges = torch.minimum(*[torch.stack([(side.reshape(n, -1) & tone).any(dim=1) for side in sides]).sum(dim=0)
                            for tone in (light, ~light)])  # that both tones reach
    tight = (unsure | dark_fit) & (edges >= TIGHT_SIDES)
    # Shapes cost erosions and flood fills: they are measured only on the images that need them.
    light_is_paper = torch.zeros(n, dtype=torch.bool)
    light_depth = torch.zeros(n)
    rows = torch.nonzero(unsure | tight).flatten()
    if len(rows):
        some, within = light[rows], inside[rows]
        light_depth[rows] = _depth(some, within, (len(rows), gh, gw))
        light_is_paper[rows] = light_depth[rows] > _depth(~some, within, (len(rows), gh, gw))
    overruled = torch.zeros(n, dtype=torch.bool)
    rows = torch.nonzero(tight).flatten()
    if len(rows):
        some, within = light[rows], inside[rows]
        lit, dark = _pieces(some, within, (len(rows), gh, gw)), _pieces(~some, within, (len(rows), gh, gw))
        decided = lit != dark
        light_is_paper[rows] = torch.where(unsure[rows] & decided & (edges[rows] == len(sides)), lit > dark,
                                           light_is_paper[rows])
        overruled[rows] = dark_fit[rows] & (lit > dark) & (light_depth[rows] >= PAPER_MIN_DEPTH)
    return light_is_paper | overruled, overruled


def _pieces(mask: torch.Tensor, inside: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """How many connected pieces of each image's masked grid points hold at least PIECE_SHARE of its points."""
    flat = connected_pieces((mask & inside).view(grid)).flatten(1)
    size = torch.zeros(grid[0], flat.shape[1] + 1).scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float32))
    size[:, 0] = 0
    return (size >= PIECE_SHARE * inside.sum(dim=1, keepdim=True)).sum(dim=1)


def spread(x: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """The maximum within `radius` points (a square) of each point of N x C x H x W values that are not
    negative, beyond the border counting as 0: `F.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius)`,
    but as shifted maxima along each axis of the image padded once (ten times faster on a CPU), whose
    windows double at each step."""
    return _window_max(_window_max(F.pad(x, [radius] * 4), radius, -1), radius, -2)


def _window_max(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """The maximum over each window of 2 * radius + 1 points along `dim` of `x`, padded by `radius` at
    each end of it (so `radius` shorter at each end), in about log2(2 * radius + 1) steps: maxima of
    windows of 1, 2, 4... points, then two overlapping ones."""
    width = 2 * radius + 1
    length = x.shape[dim] - 2 * radius
    windows, size = x, 1
    while 2 * size <= width:
        n = windows.shape[dim]
        windows = torch.maximum(windows.narrow(dim, 0, n - size), windows.narrow(dim, size, n - size))
        size *= 2
    return torch.maximum(windows.narrow(dim, 0, length), windows.narrow(dim, width - size, length))


def flood(seeds: torch.Tensor, within: torch.Tensor, most: int) -> torch.Tensor:
    """N x 1 x H x W seed values (not negative) spread over the points of `within` (1, else 0) that they
    reach 8-connected, the largest winning, for at most `most` steps; every 8 steps the grids that
    stopped changing leave, so a batch costs what its slowest grids need."""
    out = seeds.clone()
    rows, front, inside = torch.arange(len(seeds)), seeds, within
    for i in range(most):
        grown = spread(front) * inside
        if i % 8 == 7:
            moving = (grown != front).flatten(1).any(dim=1)
            out[rows] = grown
            rows, front, inside = rows[moving], grown[moving], inside[moving]
            if not len(rows):
                break
        else:
            front = grown
    out[rows] = front
    return out


def connected_pieces(on: torch.Tensor) -> torch.Tensor:
    """Connected pieces (8-connected) of N x H x W boolean maps: each true point gets its piece's number
    (1 to H x W; not consecutive), others 0."""
    _, height, width = on.shape
    mask = on.unsqueeze(1).float()
    ids = torch.arange(1, height * width + 1, dtype=torch.float32).view(1, 1, height, width) * mask
    return flood(ids, mask, height * width)[:, 0].long()


def _fit_paper(design: torch.Tensor, v: torch.Tensor, keep: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Least squares v = a + b x + c y + d r^2 over the kept points, by the normal equations (N x 4).

    The r^2 term takes vignetting and lamp fall-off. Too few points keep the previous fit; a singular
    system falls back to the mean.
    """
    d = design * keep.float().unsqueeze(1)
    lhs = torch.bmm(d, design.mT)
    rhs = torch.bmm(d, v.unsqueeze(2)).squeeze(2)
    solution, info = torch.linalg.solve_ex(lhs, rhs)
    count = keep.sum(dim=1)
    mean = torch.zeros_like(fallback)
    mean[:, 0] = rhs[:, 0] / count.clamp(min=1)
    solved = torch.where((info == 0)[:, None] & solution.isfinite().all(dim=1, keepdim=True), solution, mean)
    return torch.where((count >= 4)[:, None], solved, fallback)


def _ink_floor(noise: torch.Tensor) -> torch.Tensor:
    """How far from the paper a pixel must be to count as ink: three sigmas of noise, at least 0.02."""
    return torch.clamp(3.0 * noise, min=0.02)


def _median(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's median over its masked values (the lower of the middle two, as `nanmedian` takes it;
    0 where none is)."""
    if values.device.type != "cpu":
        return torch.where(mask, values, torch.nan).nanmedian(dim=1).values.nan_to_num(0.0)
    # On a CPU numpy's sort is about twice as fast as torch's nanmedian; masked values sort last.
    ordered = np.sort(torch.where(mask, values, torch.inf).numpy(), axis=1)
    count = mask.sum(dim=1)
    middle = np.take_along_axis(ordered, ((count - 1).clamp(min=0) // 2).numpy()[:, None], axis=1)[:, 0]
    return torch.where(count > 0, torch.from_numpy(middle), 0.0)


def ink_is_dark(beyond: torch.Tensor) -> torch.Tensor:
    """True where an image is dark ink on lighter paper: more ink mass lies below the paper than above.

    `beyond` holds each pixel's signed distance from the paper past the noise floor (0 within it).
    """
    return beyond.sum(dim=(1, 2)) < 0


def _drop_ruled_lines(ink: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Erase the parts of a form's printed box that a cut cell keeps: straight lines along its edges.

    A ruled line is a run of at most a few rows (or columns) in the outer fifth of the image, each
    inked across at least 90% of it, with the rows inked across LINE_EDGE of it that run on from them.
    Tight crops under 40 px are left alone: there a digit's own bar can span the frame.
    """
    applies = torch.minimum(h, w) >= 40
    if not bool(applies.any()):
        return ink
    on = F.threshold(ink, 0.3, 0.0).sign_()
    keeps = []
    for dim, size, across in ((2, h, w), (1, w, h)):
        coverage = on.sum(dim=dim) / across[:, None]
        index = torch.arange(coverage.shape[1]).view(1, -1)
        size = size[:, None]
        band = torch.clamp(size // 5, min=2)
        lines = coverage >= 0.9
        keep = torch.ones_like(coverage)
        for edge in (index < band, (index >= size - band) & (index < size)):
            hits = lines & edge
            count = hits.sum(dim=1, keepdim=True)
            lo = torch.where(hits, index, index.shape[1]).amin(dim=1, keepdim=True)
            hi = torch.where(hits, index, -1).amax(dim=1, keepdim=True)
            # Half-inked rows that run on from the line's count towards its thickness, less a soft edge
            # each side: a tight crop's digit, whose bar along the edge tapers off over many rows, is no line.
            half = coverage >= LINE_EDGE
            after = torch.where(index <= hi, True, half).cumprod(dim=1).sum(dim=1, keepdim=True) - (hi + 1)
            before = torch.where(index >= lo, True, half).flip(1).cumprod(dim=1).sum(dim=1, keepdim=True) - (
                index.shape[1] - lo)
            thickness = torch.maximum(count, hi - lo + 1 + after + before - 2)
            printed = applies[:, None] & (count > 0) & (thickness <= torch.clamp(size // LINE_SHARE, min=3))
            keep[printed & (index >= lo - 1) & (index <= hi + 1)] = 0.0  # with the line's soft edges
        keeps.append(keep)
    rows, cols = keeps
    if bool((rows == 0).any() or (cols == 0).any()):
        ink = ink * rows.unsqueeze(2) * cols.unsqueeze(1)
    return ink


def _drop_border_clutter(ink: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Erase ink that runs along an edge of the image, and the ink connected to it, when other ink
    lies well away from it: a floor, a page's edge or a table around a small digit in a photo. A digit
    touching the border touches it briefly; a tight crop's digit has nothing far from it; images
    under 40 px are left alone. What the clutter leaves is cut down to the digit (`_middle_piece`).

    Works on a grid of at most CLUTTER_GRID points a side; ink within CLUTTER_EDGE points of the
    border lies on the edge.
    """
    n, height, width = ink.shape
    pooled, step = _clutter_grid(ink)
    on = pooled > FAINT_INK / 2
    gh, gw = (-(-h // step)).view(n, 1, 1), (-(-w // step)).view(n, 1, 1)
    # The strips along each image's four edges (the canvas is padded: the far edges vary).
    strip = torch.arange(CLUTTER_EDGE)
    far_cols = (gw - CLUTTER_EDGE + strip.view(1, 1, -1)).clamp(min=0).expand(n, on.shape[1], CLUTTER_EDGE)
    far_rows = (gh - CLUTTER_EDGE + strip.view(1, -1, 1)).clamp(min=0).expand(n, CLUTTER_EDGE, on.shape[2])
    along = torch.stack([on[:, :, :CLUTTER_EDGE].any(dim=2).sum(dim=1) / gh.flatten(),
                         on.gather(2, far_cols).any(dim=2).sum(dim=1) / gh.flatten(),
                         on[:, :CLUTTER_EDGE, :].any(dim=1).sum(dim=1) / gw.flatten(),
                         on.gather(1, far_rows).any(dim=1).sum(dim=1) / gw.flatten()], dim=1)
    # Flooding costs dozens of passes over the grid: only where its result may count (see `far` below).
    edged = torch.nonzero((along.amax(dim=1) > 0) & (torch.minimum(h, w) >= 40)).flatten()
    spans = _band_spans(on[edged], gh[edged], gw[edged])
    k = edged[(along[edged].amax(dim=1) >= CLUTTER_SPAN) | (spans.amax(dim=1) >= CLUTTER_FULL)]
    if not len(k):
        return ink
    grid_on = on[k].unsqueeze(1).float()
    iy, ix = torch.arange(on.shape[1]).view(1, -1, 1), torch.arange(on.shape[2]).view(1, 1, -1)
    edge = (ix < CLUTTER_EDGE) | (ix >= gw[k] - CLUTTER_EDGE) | (iy < CLUTTER_EDGE) | (iy >= gh[k] - CLUTTER_EDGE)
    reached = flood(grid_on * edge.unsqueeze(1), grid_on, 4 * CLUTTER_GRID)  # the ink connected to the edges
    gap = max(1, round(CLUTTER_GAP * CLUTTER_GRID))
    near = spread(reached, gap)
    far = (grid_on * (1.0 - near)).flatten(1).sum(dim=1) >= 2
    band = _clutter_bands(reached[:, 0] > 0, gh[k], gw[k])
    far &= (along[k].amax(dim=1) >= CLUTTER_SPAN) | band.flatten(1).any(dim=1)
    erased = torch.maximum(reached[:, 0], band.float())
    if bool(far.any()):
        f = torch.nonzero(far).flatten()
        left = pooled[k[f]] * (erased[f] == 0)
        erased[f] = torch.maximum(erased[f], (~_middle_piece(left, gh[k[f]], gw[k[f]])).float())
    cleaned = ink[k] * (1.0 - _to_pixels(erased, step, ink.shape))
    ink = ink.clone()
    ink[k] = torch.where(far.view(-1, 1, 1), cleaned, ink[k])
    return ink


def _drop_shading(ink: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Remove ink broader than the strokes (a white top-hat): a shadow across the sheet, which the
    paper's plane and radial term cannot follow, is ink to them. What an opening keeps is broader than
    its radius: SHADE_STROKES times the strokes' half width (their area over their outline), and at
    least SHADE_RADIUS of the image."""
    strong = (ink > STRONG_INK).float().unsqueeze(1)
    outline = strong - (1.0 - spread(1.0 - strong))  # the strong points that one erosion removes
    half = strong.flatten(1).sum(dim=1) / outline.flatten(1).sum(dim=1).clamp(min=1.0)
    radius = torch.maximum(SHADE_STROKES * half, SHADE_RADIUS * torch.minimum(h, w)).round().long()
    out = torch.empty_like(ink)
    for r in radius.unique().tolist():
        rows = torch.nonzero(radius == r).flatten()
        some = ink[rows].unsqueeze(1)
        opened = spread(1.0 - spread(1.0 - some, r), r)
        out[rows] = (some - opened)[:, 0].clamp_(min=0.0)
    return out / out.amax(dim=(1, 2), keepdim=True).clamp(min=1e-12)


def _keep_digit(ink: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Keep only the middle piece of the ink and what lies near it (`_middle_piece`), on a grid of at most
    CLUTTER_GRID points a side."""
    pooled, step = _clutter_grid(ink)
    return ink * _to_pixels(_middle_piece(pooled, -(-h // step), -(-w // step)).float(), step, ink.shape)


def _clutter_grid(ink: torch.Tensor) -> tuple[torch.Tensor, int]:
    """N x H x W ink on a grid of at most CLUTTER_GRID points a side (each point the maximum of the
    step x step pixels it stands for), and that step."""
    _, height, width = ink.shape
    step = max(1, math.ceil(max(_grouped(height), _grouped(width)) / CLUTTER_GRID))
    return (F.max_pool2d(ink.unsqueeze(1), step, ceil_mode=True)[:, 0] if step > 1 else ink), step


def _to_pixels(grid: torch.Tensor, step: int, shape: torch.Size) -> torch.Tensor:
    """Values on `_clutter_grid`'s grid (N x gh x gw) back on the pixels of images of `shape` (N x H x W)."""
    return F.interpolate(grid.unsqueeze(1), scale_factor=step)[:, 0, :shape[1], :shape[2]]


def _middle_piece(ink: torch.Tensor, gh: torch.Tensor, gw: torch.Tensor) -> torch.Tensor:
    """In a photo whose edges showed clutter, the digit is the strong ink nearest the middle: of the
    pieces of the ink left (on grids gh x gw; points one apart are one piece), the one with most points
    of strong ink (over half the image's strongest), weighted by nearness to the middle, and the pieces
    whose boxes come within PIECE_REACH of its box (a 5's flag). Returns what to keep; the rest is
    remnants of the clutter (a shadow, a sheet's edge, grout lines)."""
    n, on = ink.shape[0], ink > FAINT_INK / 2
    joined = spread(on.unsqueeze(1).float())[:, 0] > 0
    labels = (connected_pieces(joined) * on).flatten(1)
    iy, ix = torch.arange(on.shape[1]).view(1, -1, 1), torch.arange(on.shape[2]).view(1, 1, -1)
    ys, xs = iy.expand_as(on).reshape(n, -1), ix.expand_as(on).reshape(n, -1)

    def per_piece(values: torch.Tensor, how: str, empty: float) -> torch.Tensor:
        out = torch.full((n, labels.shape[1] + 1), empty)
        return out.scatter_reduce(1, labels, values.float(), how, include_self=how == "sum")

    count = per_piece(torch.ones_like(ys), "sum", 0.0)
    strong = per_piece(ink.flatten(1) > STRONG_INK, "sum", 0.0)
    strong[:, 0] = 0
    cy = per_piece(ys, "sum", 0.0) / count.clamp(min=1) / gh.view(n, 1)
    cx = per_piece(xs, "sum", 0.0) / count.clamp(min=1) / gw.view(n, 1)
    nearness = (1 - 2 * torch.maximum((cy - 0.5).abs(), (cx - 0.5).abs())).clamp(min=0)
    chosen = (strong * nearness ** 2).argmax(dim=1, keepdim=True)
    top, bottom = per_piece(ys, "amin", 1e9), per_piece(ys, "amax", -1e9)
    left, right = per_piece(xs, "amin", 1e9), per_piece(xs, "amax", -1e9)
    at = [side.gather(1, chosen) for side in (top, bottom, left, right)]
    reach = PIECE_REACH * torch.maximum(at[1] - at[0], at[3] - at[2]) + 1
    near = (top <= at[1] + reach) & (bottom >= at[0] - reach) & (left <= at[3] + reach) & (right >= at[2] - reach)
    near[:, 0] = False
    return near.gather(1, labels).view_as(on)


def _clutter_bands(reached: torch.Tensor, gh: torch.Tensor, gw: torch.Tensor) -> torch.Tensor:
    """Where the ink flooded from the edges (`reached`, on grids gh x gw) is a floor around a sheet
    rather than a digit or a ruled line: it stays within CLUTTER_BAND of the edges, spans CLUTTER_FULL
    of one edge within that band, and meets at most two edges away from their corners (a digit
    cropped tightly meets all four). Returns, for each grid, the strip along each such edge as deep
    as the flooded ink goes: the floor's lines that the flood missed lie in it."""
    iy, ix = torch.arange(reached.shape[1]).view(1, -1, 1), torch.arange(reached.shape[2]).view(1, 1, -1)
    # Distance from each of the four edges (left, right, top, bottom), in grid points.
    depth = torch.stack([ix.expand_as(reached), (gw - 1 - ix).expand_as(reached),
                         iy.expand_as(reached), (gh - 1 - iy).expand_as(reached)], dim=1)
    across = torch.stack([gw, gw, gh, gh], dim=1)  # N x 4 x 1 x 1: the grid's size across each edge
    in_band = depth < CLUTTER_BAND * across
    stays = ~(reached & ~in_band.any(dim=1)).flatten(1).any(dim=1)
    mine = reached.unsqueeze(1) & in_band
    crosswise = in_band[:, [2, 2, 0, 0]] | in_band[:, [3, 3, 1, 1]]
    core = mine & ~crosswise  # in an edge's band, away from the corners
    meets = (core & (depth < CLUTTER_EDGE)).flatten(2).any(dim=2).sum(dim=1)
    floor = (_band_spans(reached, gh, gw) >= CLUTTER_FULL) & (stays & (meets <= 2)).view(-1, 1)
    # How deep the floor goes: measured away from the corners, where a line along the next edge would
    # pass for depth; in the corners only when the flood reached nothing else (a broken grid line).
    deepest = torch.where(core, depth, -1).flatten(2).amax(dim=2)
    reach = torch.where(deepest >= 0, deepest, torch.where(mine, depth, -1).flatten(2).amax(dim=2))
    return ((depth <= reach.view(*reach.shape, 1, 1)) & floor.view(*floor.shape, 1, 1)).any(dim=1)


def _band_spans(mask: torch.Tensor, gh: torch.Tensor, gw: torch.Tensor) -> torch.Tensor:
    """N x 4: for each edge (left, right, top, bottom) of grids gh x gw, the share of its length spanned
    by the mask's points within CLUTTER_BAND of it."""
    iy, ix = torch.arange(mask.shape[1]).view(1, -1, 1), torch.arange(mask.shape[2]).view(1, 1, -1)
    across, down = CLUTTER_BAND * gw, CLUTTER_BAND * gh
    return torch.stack([_span((mask & (ix < across)).any(dim=2)) / gh.flatten(),
                        _span((mask & (gw - 1 - ix < across)).any(dim=2)) / gh.flatten(),
                        _span((mask & (iy < down)).any(dim=1)) / gw.flatten(),
                        _span((mask & (gh - 1 - iy < down)).any(dim=1)) / gw.flatten()], dim=1)


def _span(on: torch.Tensor) -> torch.Tensor:
    """From the first to the last true index of each row, counted in indices (0 where none is)."""
    index = torch.arange(on.shape[1]).view(1, -1)
    first = torch.where(on, index, on.shape[1]).amin(dim=1)
    last = torch.where(on, index, -1).amax(dim=1)
    return (last - first + 1).clamp(min=0)


def _mass_span(profile: torch.Tensor, trim: float = 0.005) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last index of each row of `profile` (ink mass along one axis) that bound the ink,
    ignoring specks that hold under `trim` of the mass at each edge."""
    cum = profile.cumsum(dim=1)
    total = cum[:, -1:]
    lo = torch.searchsorted(cum, total * trim, right=True).squeeze(1)
    hi = torch.searchsorted(cum, total * (1.0 - trim)).squeeze(1)
    return torch.minimum(lo, hi), torch.maximum(lo, hi)


def _fit_box(ink: torch.Tensor, r0: torch.Tensor, r1: torch.Tensor, c0: torch.Tensor,
             c1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Resize each crop so its longer side is BOX pixels, keeping the aspect ratio, into the top left
    of a BOX x BOX array, and restore full contrast; also return each resized crop's height and width."""
    hc, wc = r1 - r0 + 1, c1 - c0 + 1
    scale = BOX / torch.maximum(hc, wc)
    out_h = torch.clamp(torch.round(hc * scale), min=1)
    out_w = torch.clamp(torch.round(wc * scale), min=1)
    box = _resize_weights(r0, hc, out_h, ink.shape[1]) @ ink @ _resize_weights(c0, wc, out_w, ink.shape[2]).mT
    top = box.amax(dim=(1, 2)).clamp(min=1e-12).view(-1, 1, 1)
    return (box / top).clamp_(0.0, 1.0), out_h, out_w


def _resize_weights(start: torch.Tensor, size: torch.Tensor, out: torch.Tensor, length: int) -> torch.Tensor:
    """N x BOX x length matrices that resize input[start:start+size] to `out` samples as PIL's
    bilinear filter does (a triangle widened by the reduction factor, weights normalised per sample)."""
    n = start.shape[0]
    scale = (size / out).view(n, 1, 1)
    support = scale.clamp(min=1.0)
    o = torch.arange(BOX).view(1, BOX, 1)
    i = torch.arange(length).view(1, 1, length)
    centre = start.view(n, 1, 1) + (o + 0.5) * scale
    weights = (1.0 - ((i + 0.5 - centre) / support).abs()).clamp_(min=0.0)
    weights *= (i >= start.view(n, 1, 1)) & (i < (start + size).view(n, 1, 1)) & (o < out.view(n, 1, 1))
    return weights / weights.sum(dim=2, keepdim=True).clamp_(min=1e-12)


def _centre(box: torch.Tensor, out_h: torch.Tensor, out_w: torch.Tensor) -> torch.Tensor:
    """Place each box's out_h x out_w content in a FRAME x FRAME array with its centre of mass at the
    centre (integer shift)."""
    n = box.shape[0]
    mass = box.sum(dim=(1, 2)).clamp(min=1e-12)
    at = torch.arange(BOX) + 0.5
    cy = (box.sum(dim=2) * at).sum(dim=1) / mass
    cx = (box.sum(dim=1) * at).sum(dim=1) / mass
    top = torch.minimum(torch.round(FRAME / 2 - cy).clamp(min=0), FRAME - out_h).long().view(n, 1, 1)
    left = torch.minimum(torch.round(FRAME / 2 - cx).clamp(min=0), FRAME - out_w).long().view(n, 1, 1)
    y = torch.arange(FRAME).view(1, FRAME, 1) - top
    x = torch.arange(FRAME).view(1, 1, FRAME) - left
    inside = (y >= 0) & (y < BOX) & (x >= 0) & (x < BOX)
    source = (y.clamp(0, BOX - 1) * BOX + x.clamp(0, BOX - 1)).view(n, FRAME * FRAME)
    return box.reshape(n, BOX * BOX).gather(1, source).view(n, FRAME, FRAME) * inside


def split_ink(frames: torch.Tensor) -> torch.Tensor:
    """Whether the ink (over FAINT_INK / 2) of each normalised frame (N x 28 x 28) is split by an empty
    row or column: in pieces apart."""
    on = frames * STD + MEAN > FAINT_INK / 2
    split = torch.zeros(len(frames), dtype=torch.bool, device=frames.device)
    for profile in (on.any(dim=2), on.any(dim=1)):
        starts = profile[:, 1:] & ~profile[:, :-1]
        split |= starts.sum(dim=1) + profile[:, 0] > 1
    return split


def normalise(frame: torch.Tensor) -> torch.Tensor:
    """Frames of 0 to 1 on MNIST's mean and standard deviation."""
    return (frame - MEAN) * (1.0 / STD)
