"""Batch augmentation that makes MNIST look like preprocessed real scans by many writers; runs on the batch's device.

MNIST's writers were mostly American: few of its 1s carry a flag, few 7s a bar, few 9s a curled
tail, few 4s an open top, and none is stretched to fill its box as some data sets and scanners do.
`continental` and `_fill_box` draw those forms from MNIST's own digits, by label; `drawn` puts in
9s and 4s drawn from strokes in forms no edit of MNIST's digits reaches (`strokes`).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import gaussian_blur

from . import strokes
from .preprocess import FRAME, frame

CONTINENTAL = 0.5
"""Share of the 1s, 7s and 9s given a continental stroke: a flag (sometimes a foot), a bar (sometimes
a foot to the right, a Z with a bar), a curled tail."""
FOOTED_SEVEN = 0.3
"""Share of those 7s also given a foot to the right: a Z with a bar (read as 2 if never seen)."""
OPEN_FOUR = 0.4
"""Share of the 4s whose right stem is cut at the bar (an open-topped 4)."""
DRAWN = 0.4
"""Share of the 9s and 4s replaced by ones drawn from strokes in forms MNIST lacks (`strokes`)."""
FILLED = 0.4
"""Share of the digits stretched across towards a square, as digits normalised to fill their box are."""
ELASTIC = 0.5
"""Share of the digits bent by a smooth random displacement (elastic distortion, Simard et al. 2003)."""
ELASTIC_PIXELS = 4.0
"""The largest displacement of the elastic distortion, in pixels of the 28 x 28 frame."""
ELASTIC_SIGMA = 3.0
"""Smoothness of the elastic displacement: the width (standard deviation) of its Gaussian, in pixels."""
PAIR_GAP = (-2, 3)
"""Columns between the two digits of a pair (`pairs`), least and most: negative where their boxes overlap."""


def augment(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Randomly distort a batch of N x 1 x 28 x 28 digits with values in [0, 1] and their `labels`;
    return the same shape.

    Drawn and continental forms, filled boxes, geometry (rotation, scale, aspect, shear, shift, elastic
    bending), stroke thickness, low resolution, binarisation, blur, contrast (gamma) and noise, each drawn
    per sample from torch's global generator.
    """
    x = continental(drawn(x, labels), labels)
    x = _fill_box(x, _pick(x, FILLED).flatten())
    x = _affine(x)
    x = _thickness(x)
    x = _low_resolution(x, _pick(x, 0.2))
    x = torch.where(_pick(x, 0.1), (x > 0.45).to(x.dtype), x)
    x = _blur(x, _pick(x, 0.25))
    gamma = torch.empty(x.shape[0], 1, 1, 1, device=x.device).uniform_(-0.5, 0.5).exp()
    x = x.clamp(0, 1).pow(gamma)
    noise = torch.randn_like(x) * torch.empty(x.shape[0], 1, 1, 1, device=x.device).uniform_(0, 0.06)
    x = torch.where(_pick(x, 0.3), x + noise, x)
    peak = x.amax(dim=(2, 3), keepdim=True).clamp_min(1e-3)
    return (x / peak).clamp(0, 1)


def drawn(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Replace a share (`DRAWN`) of the 9s and 4s with ones drawn from strokes."""
    x = x.clone()
    for digit, draw in ((9, strokes.nines), (4, strokes.fours)):
        which = (labels == digit) & (torch.rand(len(labels), device=x.device) < DRAWN)
        if bool(which.any()):
            x[which] = draw(int(which.sum()), x.device).unsqueeze(1)
    return x


def continental(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Draw continental forms onto some digits, strokes as wide as the digit's own: a flag down to the
    left from the top of a 1 (and sometimes a foot), a bar across the stem of a 7 (and sometimes a foot
    to the right), a tail curling left and up from the foot of a 9; and cut the right stem of a 4 above
    its bar."""
    n, device = x.shape[0], x.device
    u = functools.partial(_uniform, n, device)
    ink = x[:, 0]
    top, bottom, _, _ = _bounds(ink)
    height = (bottom - top + 1).float()
    inked = (ink > 0.5).any(dim=2)
    width = torch.where(inked, ink.sum(dim=2), torch.nan).nanmedian(dim=1).values.nan_to_num(2.0).clamp(1.5, 4.0)
    index = torch.arange(FRAME, device=device)

    def centre(row: torch.Tensor) -> torch.Tensor:
        """Ink-weighted column of each image's `row` (rounded to a whole row)."""
        line = ink[torch.arange(n, device=device), row.round().long().clamp(0, FRAME - 1)]
        return (line * index).sum(dim=1) / line.sum(dim=1).clamp(min=1e-6)

    chosen = torch.rand(n, device=device) < CONTINENTAL
    ones, sevens, nines = (labels == 1) & chosen, (labels == 7) & chosen, (labels == 9) & chosen
    head, foot = centre(top + 1.0), centre(bottom - 1.0)
    bar = top + height * u(0.4, 0.6)
    bar_at, bar_half, tilt = centre(bar), height * u(0.15, 0.4), height * u(-0.06, 0.06)
    foot_half, tail, curl = height * u(0.15, 0.3), height * u(0.2, 0.5), u(0.0, 0.7)
    low = bottom.float()
    marks = [  # (from y, from x, to y, to x, on which digits)
        (top.float(), head, top + height * u(0.15, 0.8), head - height * u(0.15, 0.5), ones),
        (low, foot - foot_half, low, foot + foot_half, ones & (torch.rand(n, device=device) < 0.3)),
        (bar + tilt, bar_at - bar_half, bar - tilt, bar_at + bar_half, sevens),
        (low, foot, low - height * u(0.0, 0.1), foot + 2 * foot_half,
         sevens & (torch.rand(n, device=device) < FOOTED_SEVEN)),
        (low, foot, low, foot - tail * curl, nines),
        (low, foot - tail * curl, low - height * u(0.05, 0.4), foot - tail, nines),
    ]
    for y0, x0, y1, x1, which in marks:
        if bool(which.any()):
            start, end = torch.stack([y0, x0], 1).unsqueeze(1), torch.stack([y1, x1], 1).unsqueeze(1)
            x = torch.maximum(x, (strokes.segments(start, end, width) * which.view(n, 1, 1)).unsqueeze(1))

    fours = (labels == 4) & (torch.rand(n, device=device) < OPEN_FOUR)
    if bool(fours.any()):
        # The bar is the widest row in the middle of the digit; the stem is the ink right of its centre.
        below = index - top.view(n, 1)
        middle = (below >= 0.35 * height.view(n, 1)) & (below <= 0.8 * height.view(n, 1))
        bar_row = torch.where(middle, (ink > 0.3).sum(dim=2).float(), -1.0).argmax(dim=1)
        above = index.view(1, FRAME, 1) < (bar_row - 1).view(n, 1, 1)
        right = index.view(1, 1, FRAME) > centre(bar_row.float()).view(n, 1, 1)
        x = x.masked_fill((above & right & fours.view(n, 1, 1)).unsqueeze(1), 0.0)
    return x


def pairs(x: torch.Tensor, count: int) -> torch.Tensor:
    """`count` frames (count x 1 x 28 x 28, values 0 to 1) of two of the batch's digits side by side, from
    overlapping to a few columns apart, framed as one digit is (`preprocess.frame`): what a field's
    touching digits look like when read whole."""
    n, device = x.shape[0], x.device
    first = torch.randint(n, (count,), device=device)
    second = (first + 1 + torch.randint(max(n - 1, 1), (count,), device=device)) % n  # never the first
    _, _, left, _ = _bounds(x[second, 0])
    _, _, _, right = _bounds(x[first, 0])
    gap = torch.randint(PAIR_GAP[0], PAIR_GAP[1] + 1, (count,), device=device)
    offset = (right - left + 1 + gap).clamp(0, 2 * FRAME)
    column = torch.arange(3 * FRAME, device=device).view(1, -1) - offset.view(-1, 1)
    inside = (column >= 0) & (column < FRAME)
    source = column.clamp(0, FRAME - 1).view(count, 1, 3 * FRAME).expand(count, FRAME, 3 * FRAME)
    placed = x[second, 0].gather(2, source)
    canvas = torch.zeros(count, FRAME, 3 * FRAME, device=device)
    canvas[:, :, :FRAME] = x[first, 0]
    canvas = torch.maximum(canvas, placed * inside.view(count, 1, 3 * FRAME))
    with torch.device(device):
        return frame(canvas)[0].unsqueeze(1)


def _bounds(ink: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Top, bottom, left and right ink rows and columns of N x 28 x 28 images (inclusive)."""
    index = torch.arange(FRAME, device=ink.device)
    rows, cols = (ink > 0.3).any(dim=2), (ink > 0.3).any(dim=1)
    return (torch.where(rows, index, FRAME).amin(dim=1).clamp(max=FRAME - 1),
            torch.where(rows, index, -1).amax(dim=1).clamp(min=0),
            torch.where(cols, index, FRAME).amin(dim=1).clamp(max=FRAME - 1),
            torch.where(cols, index, -1).amax(dim=1).clamp(min=0))


def _fill_box(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Stretch the chosen digits across, about their centre, 1.3 to 3 times (at most to a square)."""
    if not bool(which.any()):
        return x
    n = x.shape[0]
    top, bottom, left, right = _bounds(x[:, 0])
    height, width = (bottom - top + 1).float(), (right - left + 1).float()
    target = torch.maximum(torch.minimum(height, width * _uniform(n, x.device, 1.3, 3.0)), width)
    squeeze = width / target
    middle = (left + right).float() / 2
    # theta maps output to input coordinates (normalised, align_corners=False): x_in = squeeze * x_out + shift.
    half = FRAME / 2
    shift = (squeeze * (half - 0.5 - middle) + middle + 0.5) / half - 1
    zero, one = torch.zeros_like(squeeze), torch.ones_like(squeeze)
    theta = torch.stack([torch.stack([squeeze, zero, shift], 1), torch.stack([zero, one, zero], 1)], 1)
    wide = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), mode="bilinear",
                         padding_mode="zeros", align_corners=False)
    return torch.where(which.view(n, 1, 1, 1), wide, x)


def _uniform(n: int, device: torch.device, lo: float, hi: float) -> torch.Tensor:
    """n draws, uniform between lo and hi."""
    return torch.empty(n, device=device).uniform_(lo, hi)


def _pick(x: torch.Tensor, p: float) -> torch.Tensor:
    """A per-sample boolean mask, broadcastable over the image, true with probability p."""
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device) < p


def _affine(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    u = functools.partial(_uniform, n, x.device)
    angle = u(-14, 14) * (math.pi / 180)
    scale = u(0.85, 1.12)
    aspect = u(-0.12, 0.12).exp()
    shear = u(-0.25, 0.25)
    cos, sin = angle.cos(), angle.sin()
    sx, sy = scale * aspect, scale / aspect
    # theta maps output coordinates to input coordinates: inverse of rotate . shear . scale.
    a = torch.stack([cos / sx, (sin + shear * cos) / sx, u(-0.13, 0.13)], dim=1)
    b = torch.stack([-sin / sy, (cos - shear * sin) / sy, u(-0.13, 0.13)], dim=1)
    theta = torch.stack([a, b], dim=1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False) + _elastic(x)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _elastic(x: torch.Tensor) -> torch.Tensor:
    """N x 28 x 28 x 2 offsets for a sampling grid: smooth random displacements of up to `ELASTIC_PIXELS`
    on a share (`ELASTIC`) of the digits, none on the rest."""
    n = x.shape[0]
    size = 2 * int(3 * ELASTIC_SIGMA) + 1
    field = gaussian_blur(torch.rand(n, 2, FRAME, FRAME, device=x.device) * 2 - 1, kernel_size=[size, size],
                          sigma=[ELASTIC_SIGMA, ELASTIC_SIGMA])
    field = field - field.mean(dim=(2, 3), keepdim=True)  # bending only: shifts are `_affine`'s
    peak = field.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    pixels = _uniform(n, x.device, 0.0, ELASTIC_PIXELS).view(n, 1, 1, 1) * _pick(x, ELASTIC)
    return (field / peak * pixels * (2 / FRAME)).permute(0, 2, 3, 1)  # grid units: 2 across the frame


def _thickness(x: torch.Tensor) -> torch.Tensor:
    """Thicker strokes (dilation) or thinner ones (erosion), blended in by a random amount."""
    thick = F.max_pool2d(x, 3, stride=1, padding=1)
    thin = -F.max_pool2d(-x, 3, stride=1, padding=1)
    amount = torch.rand(x.shape[0], 1, 1, 1, device=x.device)
    choice = torch.rand(x.shape[0], 1, 1, 1, device=x.device)
    x = torch.where(choice < 0.25, x + (thick - x) * amount, x)
    return torch.where(choice > 0.8, x + (thin - x) * amount, x)


def _low_resolution(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Down to 10-16 px and back up, like small crops scaled up by preprocessing."""
    size = int(torch.randint(10, 17, ()).item())
    small = F.interpolate(x, size=(size, size), mode="area")
    return torch.where(mask, F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False), x)


def _blur(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    sigma = float(torch.empty(()).uniform_(0.4, 1.1))
    return torch.where(mask, gaussian_blur(x, kernel_size=[5, 5], sigma=[sigma, sigma]), x)
