"""Fields of several digits (a postcode, an amount, a date): the field's ink cut into digits, left to right.

Steps, after the same paper and polarity work as for single digits (`preprocess.ink_batch`):

1. Erase a printed comb or box: thin lines along SEPARATOR_SHARE of the field's ink; then shear the
   ink upright by the hand's slant, so that the cuts below, straight down, follow the writing.
2. Find the ink's connected pieces (on a grid of at most LABEL_ROWS rows).
3. Merge pieces that share their columns and lie over one another (a 5's flag, a 4 drawn in two
   strokes), then drop specks.
4. Cut a piece too wide for one digit (or a narrower one the model reads whole with doubt) where the
   model (the judge) is surest of both parts; join neighbours that the judge reads better together
   (a 0 or 4 in two strokes, a 7's bar beside its stem); with `digits`, merge the closest neighbours
   or cut the widest piece until there are that many.
5. Frame each digit as a single digit is framed (`preprocess.frame`); its box is given in the
   field's own (slanted) pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .preprocess import (
    FAINT_INK,
    FRAME,
    LINE_SHARE,
    Grey,
    Invert,
    connected_pieces,
    frame,
    ink_batch,
    normalise,
    padded,
)

FIELD_SIDE = 64
"""A field is decoded with its shorter side (its height) reduced to about this many pixels."""
SEPARATOR_SHARE = 0.9
"""A thin straight line along this share of the field's ink is printed (a comb), not written."""
LABEL_ROWS = 32
"""Pieces are found on a grid of at most this many rows."""
MERGE_OVERLAP = 0.5
"""Pieces whose columns overlap by this share of the narrower one's width are one digit when their
rows overlap by no more than this share of the shorter one's height..."""
FRAGMENT = 0.6
"""...or when the shorter is under this share of the taller one's height."""
SPECK = 0.1
"""A piece with less ink than this share of the median piece's is a speck."""
SPLIT_ASPECT = 1.0
"""A piece wider than this many times the field's digit height may hold several digits (the judge
says whether it does)..."""
WHOLE_MAX = 1.5
"""...and one wider than this many times does: it is cut whatever the judge says of it whole."""
DOUBT_ASPECT = 0.7
"""A piece between this many times the digit height and SPLIT_ASPECT wide may hold two narrow digits..."""
DOUBT_SURE = 0.5
"""...when the judge reads it whole below this confidence (`_cut_doubtful`)."""
MAX_SPLIT = 4
"""A piece is cut into at most this many digits (in rounds of cuts in two)..."""
CUT_FROM = 0.15
"""...each cut at least this share of the piece's width from its ends..."""
CUT_TRIES = 6
"""...the judge trying about this many places for it."""
JOIN_WIDTH = 1.3
"""Neighbouring pieces may be one digit drawn in several strokes when together they are at most this
many times the field's digit height wide..."""
JOIN_GAP = 0.15
"""...and at most this share of it apart."""
FRAME_CHUNK = 64
"""Crops framed together (`_frames`)."""
SLANT_STEEP = 0.5
"""The slant is measured on the edges of near-vertical strokes: edges whose slope across (columns per
row) is at most this..."""
SLANT_EDGE = 0.05
"""...and whose ink changes by at least this from one pixel to the next but one."""


@dataclass(frozen=True)
class Piece:
    """Part of a field's ink: the labels of its connected pieces, and the columns it takes of them."""

    labels: frozenset[int]
    left: int
    right: int
    """One past its last column."""
    top: int
    bottom: int
    mass: float

    @property
    def width(self) -> int:
        return self.right - self.left


@dataclass(frozen=True)
class CutField:
    """A field cut into digits: `pixels` holds k normalised 28 x 28 frames, left to right (None when
    blank), `boxes` each digit's (left, top, right, bottom) in the decoded image's pixels."""

    pixels: np.ndarray | None
    boxes: list[tuple[int, int, int, int]]
    inverted: bool


Judge = Callable[[torch.Tensor], torch.Tensor]
"""The model's probabilities (N x 10) for N normalised frames (N x 28 x 28)."""


@dataclass
class _Field:
    ink: torch.Tensor
    """Sheared upright (`_upright`): column x, row y here is column x - pad + slant (y - rows / 2) of the field."""
    labels: torch.Tensor
    pieces: list[Piece]
    height: float
    """The field's digit height: the median height of its pieces."""
    slant: float = 0.0
    pad: int = 0

    def box(self, piece: Piece) -> tuple[int, int, int, int]:
        """The piece's box (left, top, right, bottom; right and bottom one past) in the field's own pixels."""
        rows, cols = self.ink.shape
        ys, xs = _in(self.labels, piece.labels)[piece.top:piece.bottom, piece.left:piece.right].nonzero().unbind(1)
        across = xs + piece.left - self.pad + self.slant * (ys + piece.top - rows / 2)
        return (max(0, math.floor(float(across.min()))), piece.top,
                min(cols - 2 * self.pad, math.floor(float(across.max())) + 1), piece.bottom)

    def crop(self, piece: Piece) -> torch.Tensor:
        """The piece's own ink, cut out to its box."""
        return _crop(self.ink, _in(self.labels, piece.labels), piece)


def cut_fields(greys: Sequence[Grey], invert: Invert = "auto", digits: int | None = None,
               judge: Judge | None = None) -> list[CutField]:
    """Cut each greyscale field into its digits (`digits`: how many each holds, when known). Where a
    piece may hold several digits, `judge` (the model) picks the cut it is surest of, and whether to
    cut at all; without it, the cut goes through the column with the least ink."""
    inks = ink_batch(greys, invert, edges=False)  # a comb's lines are dropped here, not the digits on them
    made = iter(_found([ink for ink, _, blank in inks if not blank]))
    fields = [None if blank else next(made) for _, _, blank in inks]
    live = [f for f in fields if f is not None and f.pieces]
    whole: set[Piece] = set()  # judged whole already: the judge would say so again
    for _ in range(MAX_SPLIT - 1):
        wide = [(f, k) for f in live for k, p in enumerate(f.pieces)
                if _may_hold_several(p, f.height) and p not in whole]
        if not wide:
            break
        choices = _best_cuts([(f, f.pieces[k]) for f, k in wide], judge,
                             keep_whole=[f.pieces[k].width <= WHOLE_MAX * f.height for f, k in wide])
        for (f, k), parts in sorted(zip(wide, choices, strict=True), key=lambda fk: -fk[0][1]):
            whole.update(parts if len(parts) == 1 else ())
            f.pieces[k:k + 1] = parts
    if judge is not None:
        _cut_doubtful(live, judge)
        _join_strokes(live, judge)
    if digits is not None:
        for f in live:
            _to_count(f, digits, judge)
    crops = [f.crop(p) for f in live for p in f.pieces]
    pixels = _frames(crops).numpy() if crops else np.empty((0, FRAME, FRAME))
    out, at = [], 0
    for found, (_, inverted, _) in zip(fields, inks, strict=True):
        pieces = found.pieces if found is not None else []
        boxes = [found.box(p) for p in pieces] if found is not None else []
        out.append(CutField(pixels[at:at + len(pieces)] if pieces else None, boxes, inverted))
        at += len(pieces)
    return out


def _found(inks: list[torch.Tensor]) -> list[_Field]:
    """Steps 1 to 3: each field's ink in pieces, left to right (the pieces of all found together)."""
    erased = [_drop_comb(ink) for ink in inks]
    slants = [_slant(ink) for ink in erased]
    upright = [_upright(ink, slant) for ink, slant in zip(erased, slants, strict=True)]
    labels = _label([ink > FAINT_INK for ink, _ in upright])
    return [_field(ink, found, slant, pad)
            for (ink, pad), found, slant in zip(upright, labels, slants, strict=True)]


def _slant(ink: torch.Tensor) -> float:
    """The hand's slant, in columns per row (negative where the writing leans right): the median slope
    of the edges of near-vertical strokes, each edge point weighed by its strength, on the ink smoothed
    (an aliased stroke's steps would be too steep to count, and its flats upright)."""
    padded = F.pad(ink[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    rows = padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]
    ink = (rows[:-2] + rows[1:-1] + rows[2:]) / 9  # the mean of 3 x 3 (as shifted sums: conv2d is slower here)
    across = ink[1:-1, 2:] - ink[1:-1, :-2]
    down = ink[2:, 1:-1] - ink[:-2, 1:-1]
    edge = (across.abs() >= SLANT_EDGE) & (down.abs() <= SLANT_STEEP * across.abs())
    if not bool(edge.any()):
        return 0.0
    # An edge across a stroke that runs x = x0 + s y changes along (1, -s): down = -s across.
    slopes, weights = (-down[edge] / across[edge]), across[edge].abs()
    order = slopes.argsort()
    cumulative = weights[order].cumsum(dim=0)
    return float(slopes[order][int((cumulative < cumulative[-1] / 2).sum())])


def _upright(ink: torch.Tensor, slant: float) -> tuple[torch.Tensor, int]:
    """The ink sheared so that strokes that slant by `slant` stand upright, widened on both sides by
    the columns it needs (`pad`, returned too); the middle row stays where it was."""
    rows, cols = ink.shape
    pad = math.ceil(abs(slant) * rows / 2) + 1
    y = torch.arange(rows, dtype=torch.float32).view(rows, 1)
    x = torch.arange(cols + 2 * pad, dtype=torch.float32).view(1, -1) - pad + slant * (y - rows / 2)
    grid = torch.stack([(2 * x + 1) / cols - 1, ((2 * y + 1) / rows - 1).expand_as(x)], dim=-1)
    return F.grid_sample(ink[None, None], grid[None], mode="bilinear", align_corners=False)[0, 0], pad


def _field(ink: torch.Tensor, labels: torch.Tensor, slant: float = 0.0, pad: int = 0) -> _Field:
    """A field from its ink and the labels of its connected pieces: the pieces merged where they lie
    over one another, specks dropped."""
    pieces = _merge_overlapping(_pieces(ink, labels, [frozenset({int(k)}) for k in labels.unique() if k > 0]))
    if pieces:
        typical = float(np.median([p.mass for p in pieces]))
        pieces = [p for p in pieces if p.mass >= SPECK * typical]
    height = float(np.median([p.bottom - p.top for p in pieces])) if pieces else 0.0
    return _Field(ink, labels, pieces, height, slant, pad)


def _best_cuts(jobs: list[tuple[_Field, Piece]], judge: Judge | None,
               keep_whole: list[bool]) -> list[list[Piece]]:
    """For each (field, piece), the piece cut in two where the judge is surest of both halves (or the
    piece whole, where `keep_whole` allows it, when the judge is surer of it whole)."""
    options: list[list[list[Piece]]] = []
    masks = [_in(f.labels, piece.labels) for f, piece in jobs]
    for (f, piece), whole, mask in zip(jobs, keep_whole, masks, strict=True):
        lo, hi = piece.left + max(1, round(CUT_FROM * piece.width)), piece.right - max(1, round(CUT_FROM * piece.width))
        if judge is None:
            profile = (f.ink * mask).sum(dim=0)
            places = [lo + int(profile[lo:hi].argmin())] if hi > lo else []
        else:
            places = list(range(lo, hi, max(1, (hi - lo) // CUT_TRIES)))
        cuts = [c for c in _halves(f.ink, mask, piece, places) if min(p.mass for p in c) > 0]
        options.append(([[piece]] if whole or not cuts else []) + cuts)
    if judge is None:
        return [o[-1] for o in options]
    crops = [_crop(f.ink, mask, p) for (f, _), mask, o in zip(jobs, masks, options, strict=True)
             for parts in o for p in parts]
    sure = judge(_frames(crops)).amax(dim=1).log().tolist()
    chosen, at = [], 0
    for o in options:
        scores = []
        for parts in o:
            scores.append(sum(sure[at:at + len(parts)]))
            at += len(parts)
        chosen.append(o[max(range(len(o)), key=scores.__getitem__)])
    return chosen


def _cut_doubtful(fields: list[_Field], judge: Judge) -> None:
    """Offer the cut to pieces a little narrower than SPLIT_ASPECT (from DOUBT_ASPECT) that the judge
    reads whole below DOUBT_SURE: two narrow digits that touch (the model is taught that two digits
    framed as one are no digit, `augment.pairs`)."""
    narrow = [(f, k) for f in fields for k, p in enumerate(f.pieces)
              if DOUBT_ASPECT * f.height < p.width <= SPLIT_ASPECT * f.height]
    if not narrow:
        return
    sure = judge(_frames([f.crop(f.pieces[k]) for f, k in narrow])).amax(dim=1).tolist()
    doubtful = [fk for fk, c in zip(narrow, sure, strict=True) if c < DOUBT_SURE]
    if not doubtful:
        return
    choices = _best_cuts([(f, f.pieces[k]) for f, k in doubtful], judge, keep_whole=[True] * len(doubtful))
    for (f, k), parts in sorted(zip(doubtful, choices, strict=True), key=lambda fk: -fk[0][1]):
        f.pieces[k:k + 1] = parts  # from the right, so that k still means the same


def _join_strokes(fields: list[_Field], judge: Judge) -> None:
    """Join neighbouring pieces, close and narrow enough together to be one digit, where the judge is
    surer of them joined than of both alone (its two confidences multiplied, as `_best_cuts` weighs a
    cut), or where one is a fragment (under FRAGMENT of the digit height): the surest such joins first,
    in rounds, until none is left."""
    sure: dict[tuple[int, Piece], float] = {}  # the judge's confidence in each piece of each field seen so far
    while True:
        pairs = [(f, k) for f in fields for k in range(len(f.pieces) - 1) if _joinable(f, k)]
        if not pairs:
            return
        new = {(id(f), p): f for f, k in pairs for p in (f.pieces[k], f.pieces[k + 1],
                                                          _union(f.pieces[k], f.pieces[k + 1]))
               if (id(f), p) not in sure}
        if new:
            crops = [f.crop(p) for (_, p), f in new.items()]
            sure |= dict(zip(new, judge(_frames(crops)).amax(dim=1).tolist(), strict=True))
        gains = []
        for f, k in pairs:
            pieces = f.pieces[k], f.pieces[k + 1]
            alone = sum(math.log(sure[id(f), p]) for p in pieces)
            joined = math.log(sure[id(f), _union(*pieces)])
            fragment = min(p.bottom - p.top for p in pieces) < FRAGMENT * f.height
            if fragment or joined > alone:
                gains.append((joined - alone + fragment, f, k))
        if not gains:
            return
        taken: set[tuple[int, int]] = set()
        joins: list[tuple[_Field, int]] = []
        for _, f, k in sorted(gains, key=lambda g: -g[0]):
            if not {(id(f), k), (id(f), k + 1)} & taken:
                taken |= {(id(f), k), (id(f), k + 1)}
                joins.append((f, k))
        for f, k in sorted(joins, key=lambda fk: -fk[1]):  # from the right, so that k still means the same
            f.pieces[k:k + 2] = [_union(f.pieces[k], f.pieces[k + 1])]


def _joinable(f: _Field, k: int) -> bool:
    a, b = f.pieces[k], f.pieces[k + 1]
    return max(a.right, b.right) - min(a.left, b.left) <= JOIN_WIDTH * f.height and \
        b.left - a.right <= JOIN_GAP * f.height


def _drop_comb(ink: torch.Tensor) -> torch.Tensor:
    """Erase a printed comb or box: straight lines, no wider than a printed line, along SEPARATOR_SHARE
    of the span of the field's ink: rows (its top and bottom) and, only where there are such rows,
    columns (its sides and separators), since a written 1 may be as tall and straight as a separator."""
    on = ink > FAINT_INK
    thin = max(3, math.ceil(ink.shape[0] / LINE_SHARE))
    rows = _lines(on, dim=1, thin=thin)
    if bool(rows.all()):
        return ink
    cols = _lines(on & (rows.view(-1, 1) > 0), dim=0, thin=thin)
    return ink * rows.view(-1, 1) * cols.view(1, -1)


def _lines(on: torch.Tensor, dim: int, thin: int) -> torch.Tensor:
    """1.0 for each row (dim 1) or column (dim 0) to keep, 0.0 for those in thin runs of lines whose
    ink runs along SEPARATOR_SHARE of the span of the ink."""
    ends = on.any(dim=1 - dim).nonzero().flatten()
    keep = torch.ones(on.shape[1 - dim])
    if len(ends) < 2:
        return keep
    full = (on.sum(dim=dim) >= SEPARATOR_SHARE * (int(ends[-1]) - int(ends[0]) + 1)).tolist()
    at = 0
    while at < len(full):
        end = at
        while end < len(full) and full[end]:
            end += 1
        if at < end <= at + thin:
            keep[max(0, at - 1):end + 1] = 0.0  # with the line's soft edges
        at = end + 1
    return keep


def _label(ons: list[torch.Tensor]) -> list[torch.Tensor]:
    """Connected pieces (8-connected) of H x W boolean maps, all found together on grids of at most
    LABEL_ROWS rows: each true point gets its piece's number (1, 2, ...; not consecutive), others 0."""
    if not ons:
        return []
    steps = [max(1, math.ceil(on.shape[0] / LABEL_ROWS)) for on in ons]
    grids = [F.max_pool2d(on.float()[None, None], step, ceil_mode=True)[0, 0] if step > 1 else on.float()
             for on, step in zip(ons, steps, strict=True)]
    labels = connected_pieces(padded(grids)[0] > 0)
    out = []
    for k, (on, step) in enumerate(zip(ons, steps, strict=True)):
        height, width = on.shape
        grid = labels[k, :grids[k].shape[0], :grids[k].shape[1]]
        out.append(grid.repeat_interleave(step, dim=0).repeat_interleave(step, dim=1)[:height, :width] * on)
    return out


def _pieces(ink: torch.Tensor, labels: torch.Tensor, groups: list[frozenset[int]]) -> list[Piece]:
    """Each group of labels as a Piece over all its columns, left to right."""
    pieces = []
    for group in groups:
        mask = _in(labels, group)
        pieces.append(_piece(ink, mask, group, 0, ink.shape[1]))
    return sorted((p for p in pieces if p.mass > 0), key=lambda p: (p.left + p.right) / 2)


def _piece(ink: torch.Tensor, mask: torch.Tensor, group: frozenset[int], left: int, right: int) -> Piece:
    """The Piece of `mask`'s ink between columns left and right (its own extent within them)."""
    part = mask[:, left:right]
    rows, cols = part.any(dim=1).nonzero().flatten(), part.any(dim=0).nonzero().flatten()
    if not len(cols):
        return Piece(group, left, left, 0, 0, 0.0)
    return Piece(group, left + int(cols[0]), left + int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1,
                 float((ink[:, left:right] * part).sum()))


def _halves(ink: torch.Tensor, mask: torch.Tensor, piece: Piece, places: list[int]) -> list[list[Piece]]:
    """The piece cut at each of the columns `places`: its left and right parts, as `_piece` gives
    them, all cuts at once (running ink extents and masses along the piece's columns)."""
    if not places:
        return []
    part = mask[:, piece.left:piece.right]
    on = part.to(torch.uint8)
    at = torch.tensor(places) - piece.left
    # Rows with ink left of each cut, and from it rightwards.
    left_rows, right_rows = on.cummax(dim=1).values[:, at - 1], on.flip(1).cummax(dim=1).values.flip(1)[:, at]
    width = part.shape[1]
    index = torch.arange(width)
    inked = part.any(dim=0)
    last_upto = torch.where(inked, index, -1).cummax(dim=0).values
    first_from = torch.where(inked, index, width).flip(0).cummin(dim=0).values.flip(0)
    mass = (ink[:, piece.left:piece.right] * part).sum(dim=0).cumsum(dim=0)
    cuts = []
    for k, c in enumerate(at.tolist()):
        halves = []
        for rows, first, last, weight, start in (
                (left_rows[:, k], int(first_from[0]), int(last_upto[c - 1]), float(mass[c - 1]), 0),
                (right_rows[:, k], int(first_from[c]), int(last_upto[-1]), float(mass[-1] - mass[c - 1]), c)):
            if first > last or first >= width:
                halves.append(Piece(piece.labels, piece.left + start, piece.left + start, 0, 0, 0.0))
                continue
            ys = rows.nonzero().flatten()
            halves.append(Piece(piece.labels, piece.left + first, piece.left + last + 1, int(ys[0]), int(ys[-1]) + 1,
                                weight))
        cuts.append(halves)
    return cuts


def _in(labels: torch.Tensor, group: frozenset[int]) -> torch.Tensor:
    """Where `labels` is one of the group's (a few labels: comparing each is ten times faster than isin)."""
    found = torch.zeros_like(labels, dtype=torch.bool)
    for label in group:
        found |= labels == label
    return found


def _merge_overlapping(pieces: list[Piece]) -> list[Piece]:
    """Merge neighbours whose columns overlap by MERGE_OVERLAP of the narrower one's width, where one
    lies over the other or is short beside it (a flag, a broken stroke): two slanted digits side by
    side share columns too, but each runs the height of the line."""
    merged: list[Piece] = []
    for piece in pieces:
        if merged:
            last = merged[-1]
            shared = min(last.right, piece.right) - max(last.left, piece.left)
            rows = min(last.bottom, piece.bottom) - max(last.top, piece.top)
            heights = sorted((last.bottom - last.top, piece.bottom - piece.top))
            if shared >= MERGE_OVERLAP * max(1, min(last.width, piece.width)) and (
                    rows <= MERGE_OVERLAP * heights[0] or heights[0] < FRAGMENT * heights[1]):
                merged[-1] = _union(last, piece)
                continue
        merged.append(piece)
    return merged


def _union(a: Piece, b: Piece) -> Piece:
    return Piece(a.labels | b.labels, min(a.left, b.left), max(a.right, b.right), min(a.top, b.top),
                 max(a.bottom, b.bottom), a.mass + b.mass)


def _may_hold_several(piece: Piece, height: float) -> bool:
    """Whether a piece is wide enough, against the field's digit height, to hold several digits."""
    return piece.width > SPLIT_ASPECT * height


def _to_count(f: _Field, digits: int, judge: Judge | None) -> None:
    """Merge the narrowest neighbouring pair, or cut the widest piece in two, until there are `digits`."""
    while len(f.pieces) > digits:
        k = min(range(len(f.pieces) - 1), key=lambda i: f.pieces[i + 1].right - f.pieces[i].left)
        f.pieces[k:k + 2] = [_union(f.pieces[k], f.pieces[k + 1])]
    while len(f.pieces) < digits:
        k = max(range(len(f.pieces)), key=lambda i: f.pieces[i].width)
        parts = _best_cuts([(f, f.pieces[k])], judge, keep_whole=[False])[0]
        if len(parts) < 2:
            break
        f.pieces[k:k + 1] = parts


def _crop(ink: torch.Tensor, mask: torch.Tensor, piece: Piece) -> torch.Tensor:
    """The piece's own ink (`mask`: its labels' points), cut out to its box."""
    box = (slice(piece.top, piece.bottom), slice(piece.left, piece.right))
    return ink[box] * mask[box]


def _frames(crops: list[torch.Tensor]) -> torch.Tensor:
    """Normalised 28 x 28 frames of crops of any sizes, framed FRAME_CHUNK at a time in order of
    size, so that few are padded far beyond their own size."""
    out = torch.zeros(len(crops), FRAME, FRAME)
    order = sorted(range(len(crops)), key=lambda k: crops[k].shape[0] * crops[k].shape[1])
    for start in range(0, len(order), FRAME_CHUNK):
        chunk = order[start:start + FRAME_CHUNK]
        height = max(max(crops[k].shape[0] for k in chunk), 1)
        width = max(max(crops[k].shape[1] for k in chunk), 1)
        canvas = torch.zeros(len(chunk), height, width)
        for row, k in enumerate(chunk):
            canvas[row, :crops[k].shape[0], :crops[k].shape[1]] = crops[k]
        out[torch.tensor(chunk)] = normalise(frame(canvas)[0])
    return out
