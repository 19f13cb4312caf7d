"""Digits drawn from pen strokes, in forms MNIST's writers seldom used and that its own digits cannot
be edited into: the 9 whose tail sweeps left under its loop (read as 3 or 8) and the 4 whose first
stroke bends into its bar (read as 6). Those two make most of the errors on Semeion's writers.

Each stroke is a cubic Bezier curve (the loop of a 9 is an ellipse) with random control points, drawn
antialiased into MNIST's 28 x 28 frame, centred, its ink 20 px on the longer side; a whole batch at
once on the batch's device.
"""

from __future__ import annotations

import functools
import math

import torch

from .preprocess import BOX, FRAME

SAMPLES = 24
"""Points along each stroke."""
CURLED = 0.3
"""Share of the 9s whose tail sweeps on and curls back up towards the loop (read as 8 if never seen)."""
SHORT_STEM = 0.3
"""Share of the 4s whose stem stops a little below the bar, as if the 4 were a u with a tall left arm."""


def nines(n: int, device: torch.device) -> torch.Tensor:
    """n 9s: a small loop on top whose tail runs down, bulging right, and sweeps left along the bottom
    like the lower half of a 3 (some curling back up towards the loop), or leaves the loop's lower left
    straight down to the left (a 9 like a rho); some are led into the loop by a stroke from the left.
    N x 28 x 28 in [0, 1]."""
    u = functools.partial(_uniform, n, device)
    # A unit box: y from 0 (top) to 1 (bottom), x from 0 to 1; _place fits the result into the frame.
    loop_h, loop_w = u(0.25, 0.45), u(0.35, 0.7)
    cy, cx = loop_h / 2 + u(0.0, 0.1), u(0.3, 0.75)
    straight = torch.rand(n, device=device) < 0.25
    # The loop ends where the tail leaves it: from its bottom to the right of its centre, or at its lower
    # left for a straight tail (angles run counter-clockwise from the right, as the pen goes).
    leave = torch.where(straight & (torch.rand(n, device=device) < 0.6), u(-2.4, -1.6), u(-1.8, 0.4)).view(n, 1)
    turn = torch.linspace(-1, 0, SAMPLES, device=device).view(1, SAMPLES)
    angle = leave + turn * (2 * math.pi + u(-0.5, 0.4).view(n, 1))  # below 2 pi: a loop left open
    loop = torch.stack([cy.view(n, 1) - loop_h.view(n, 1) / 2 * angle.sin(),
                        cx.view(n, 1) + loop_w.view(n, 1) / 2 * angle.cos()], dim=2)
    join = loop[:, -1]
    curled = torch.rand(n, device=device) < CURLED
    rise = torch.where(straight, 0.0, torch.where(curled, u(0.15, 0.45), u(0.0, 0.15)))
    end = torch.stack([1 - rise, torch.where(straight, u(0.0, 0.5), u(-0.2, 0.3))], 1)
    bowl = torch.stack([
        torch.stack([join[:, 0] + (1 - join[:, 0]) * u(0.2, 0.6), torch.maximum(join[:, 1], cx) + u(0.0, 0.5)], 1),
        torch.stack([1 + u(0.0, 0.1), join[:, 1] + u(-0.1, 0.3)], 1),
    ], 1)
    middle = torch.where(straight.view(n, 1, 1), _line(join, end)[:, 1:3], bowl)
    tail = _bezier(torch.cat([join.unsqueeze(1), middle, end.unsqueeze(1)], 1))
    top = torch.stack([cy - loop_h / 2, cx], 1)
    lead = _bezier(_line(torch.stack([top[:, 0] + u(-0.05, 0.1), cx - loop_w / 2 - u(0.1, 0.3)], 1), top))
    led = (torch.rand(n, device=device) < 0.3).view(n, 1, 1)
    lead = torch.where(led, lead, top.unsqueeze(1))  # no lead-in: a stroke of no length
    return _place([loop, tail, lead], n, device)


def fours(n: int, device: torch.device) -> torch.Tensor:
    """n 4s open at the top: a first stroke down to the left that turns (sharply, or round like a U)
    into a bar rising to the right; then, half the time without lifting the pen, a stem down from the
    bar's end, else a stem that crosses the bar from higher up; some stems stop just below the bar.
    N x 28 x 28 in [0, 1]."""
    u = functools.partial(_uniform, n, device)
    bar = u(0.55, 0.9)
    head = torch.stack([u(0.0, 0.1), u(0.3, 0.8)], 1)
    corner = torch.stack([bar + u(-0.05, 0.05), u(-0.05, 0.2)], 1)
    reach = torch.stack([bar - u(0.0, 0.2), u(0.75, 1.05)], 1)
    below = torch.stack([bar + u(0.05, 0.2), corner[:, 1]], 1)  # the bottom of a round turn
    round_ = torch.stack([head, below, below + torch.stack([torch.zeros(n, device=device), u(0.2, 0.5)], 1), reach], 1)
    sharp = (torch.rand(n, device=device) < 0.5).view(n, 1, 1)
    down = torch.where(sharp, _line(head, corner), round_)
    across = torch.where(sharp, _line(corner, reach), _line(reach, reach))
    crossing = (torch.rand(n, device=device) < 0.5).view(n, 1)
    stem_x = reach[:, 1] - torch.where(crossing.flatten(), u(0.1, 0.3), u(0.0, 0.1))
    stem_top = torch.where(crossing, torch.stack([bar * u(0.0, 0.7), stem_x], 1), reach)
    short = torch.rand(n, device=device) < SHORT_STEM
    stem_end = torch.where(short, bar + u(0.1, 0.25), torch.ones(n, device=device))
    stem = _line(stem_top, torch.stack([stem_end, stem_x - u(-0.05, 0.15)], 1))
    return _place([_bezier(down), _bezier(across), _bezier(stem)], n, device)


def _line(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """N x 4 x 2 control points of the straight strokes from a to b (N x 2 each)."""
    return torch.stack([a + (b - a) * t for t in (0.0, 1 / 3, 2 / 3, 1.0)], 1)


def _uniform(n: int, device: torch.device, lo: float, hi: float) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(lo, hi)


def _bezier(control: torch.Tensor) -> torch.Tensor:
    """N x SAMPLES x 2 points along the cubic Bezier curves with N x 4 x 2 control points."""
    t = torch.linspace(0, 1, SAMPLES, device=control.device).view(1, SAMPLES, 1)
    weights = [(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3]
    return sum((w * control[:, k:k + 1] for k, w in enumerate(weights)), torch.zeros_like(t))


def _place(strokes: list[torch.Tensor], n: int, device: torch.device) -> torch.Tensor:
    """Slant the strokes (N x S x 2 points, y and x), fit them into the frame and draw them."""
    points = torch.cat(strokes, dim=1)
    slant = _uniform(n, device, -0.1, 0.5).view(n, 1)
    points = torch.stack([points[..., 0], points[..., 1] + slant * (1 - points[..., 0])], dim=2)
    width = _uniform(n, device, 1.6, 3.2).view(n, 1, 1)
    low, high = points.amin(dim=1, keepdim=True), points.amax(dim=1, keepdim=True)
    scale = (BOX - width - 1) / (high - low).amax(dim=2, keepdim=True).clamp_min(1e-3)  # ink 20 px, pen included
    points = (points - (low + high) / 2) * scale + (FRAME - 1) / 2
    ends = points.split([s.shape[1] for s in strokes], dim=1)
    return segments(torch.cat([e[:, :-1] for e in ends], 1), torch.cat([e[:, 1:] for e in ends], 1), width)


def segments(a: torch.Tensor, b: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """N x 28 x 28 antialiased ink of each image's K straight segments from a to b (N x K x 2, y and x),
    `width` (N) pixels wide."""
    n = a.shape[0]
    at = torch.arange(FRAME, device=a.device, dtype=torch.float32)
    pixel_y, pixel_x = at.view(1, FRAME, 1, 1), at.view(1, 1, FRAME, 1)
    ay, ax = a[..., 0].view(n, 1, 1, -1), a[..., 1].view(n, 1, 1, -1)
    dy, dx = (b - a)[..., 0].view(n, 1, 1, -1), (b - a)[..., 1].view(n, 1, 1, -1)
    t = (((pixel_y - ay) * dy + (pixel_x - ax) * dx) / (dy * dy + dx * dx).clamp_min(1e-6)).clamp(0, 1)
    distance = torch.hypot(pixel_y - (ay + t * dy), pixel_x - (ax + t * dx)).amin(dim=3)
    return (width.view(n, 1, 1) / 2 + 0.5 - distance).clamp(0, 1)
