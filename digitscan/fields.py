"""Fields of several digits (a postcode, an amount, a date): the field's ink cut into digits, left to right.

Steps, after the same paper and polarity work as for single digits (`preprocess.ink_batch`):

1. Erase a printed comb or box: thin lines along SEPARATOR_SHARE of the field's ink; then shear the
   ink upright by the hand's slant, so that the cuts below, straight down, follow the writing.
2. Find the ink's connected pieces (on a grid of at most LABEL_ROWS rows).
3. Merge pieces that share their columns and lie over one another (a 5's flag, a 4 drawn in two
   strokes), then drop specks.
4. Cut a piece too wide for one digit (or a narrower one the model reads whole with doubt) where the
   model (the judge) is surest of both parts, straight down or along a seam that winds between them;
   join neighbours that the judge reads better together (a 0 or 4 in two strokes, a 7's bar beside
   its stem); with `digits`, merge the closest neighbours, or cut the piece whose cut the judge gains
   most from, until there are that many.
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
WHOLE_MAX = 2.0
"""...and one wider than this many times does: it is cut whatever the judge says of it whole."""
DOUBT_ASPECT = 0.7
"""A piece between this many times the digit height and SPLIT_ASPECT wide may hold two narrow digits..."""
DOUBT_SURE = 0.5
"""...when the judge reads it whole below this confidence (`_cut_doubtful`)."""
MAX_SPLIT = 4
"""A piece is cut into at most this many digits (in rounds of cuts in two)..."""
CUT_FROM = 0.15
"""...each cut at least this share of the piece's width from its ends..."""
CUT_TRIES = 4
"""...the judge trying about this many places for it: a cut straight down through each, and one from
top to bottom where it crosses the least ink..."""
SEAM_REACH = 0.3
"""...within this many times the digit height of the place, either way..."""
SEAM_TURN = 0.01
"""...each turn (a column left or right from one row to the next) costing as much as this much ink."""
CUT_COST = 0.05
"""A cut must beat the piece whole by this much (the sum of its parts' log confidences against the
whole's): the model reads a part of a wide digit (half an 8, a 2's curl) about as surely as a digit,
so where both read about as sure, one digit is likelier than two."""
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
    """Part of a field's ink: the labels of its connected pieces, and the cuts that bound it; its box
    (columns left to right, rows top to bottom) and the sum of its ink."""

    labels: frozenset[int]
    left: int
    right: int
    """One past its last column."""
    top: int
    bottom: int
    mass: float
    after: tuple[int, ...] | None = None
    """Where a cut runs left of it (`_seams`): in each row of the field, its first column (None: no cut)."""
    before: tuple[int, ...] | None = None
    """Where a cut runs right of it: in each row, the first column past it (None: no cut)."""

    @property
    def width(self) -> int:
        return self.right - self.left


@dataclass(frozen=True)
class CutField:
    """A field cut into digits: `pixels` holds k normalised 28 x 28 frames, left to right (None when
    blank), `boxes` each digit's (left, top, right, bottom) in the decoded image's pixels, `probs`
    the judge's k x 10 probabilities (None when blank or cut without a judge)."""

    pixels: np.ndarray | None
    boxes: list[tuple[int, int, int, int]]
    inverted: bool
    probs: np.ndarray | None = None


Judge = Callable[[torch.Tensor], torch.Tensor]
"""The model's probabilities (N x 10) for N normalised frames (N x 28 x 28)."""


@dataclass
class FieldInk:
    ink: torch.Tensor
    """Sheared upright (`_upright`): column x, row y here is column x - pad + slant (y - rows / 2) of the field."""
    labels: torch.Tensor
    pieces: list[Piece]
    height: float
    """The field's digit height: the median height of its pieces."""
    slant: float = 0.0
    pad: int = 0

    def points(self, piece: Piece) -> torch.Tensor:
        """Where the piece's ink is, within its box: its labels' points, between the cuts that bound it."""
        rows, cols = slice(piece.top, piece.bottom), slice(piece.left, piece.right)
        on = _in(self.labels[rows, cols], piece.labels)
        columns = torch.arange(piece.left, piece.right).view(1, -1)
        if piece.after is not None:
            on &= columns >= torch.tensor(piece.after[rows]).view(-1, 1)
        if piece.before is not None:
            on &= columns < torch.tensor(piece.before[rows]).view(-1, 1)
        return on

    def box(self, piece: Piece) -> tuple[int, int, int, int]:
        """The piece's box (left, top, right, bottom; right and bottom one past) in the field's own pixels."""
        rows, cols = self.ink.shape
        ys, xs = self.points(piece).nonzero().unbind(1)
        across = xs + piece.left - self.pad + self.slant * (ys + piece.top - rows / 2)
        return (max(0, math.floor(float(across.min()))), piece.top,
                min(cols - 2 * self.pad, math.floor(float(across.max())) + 1), piece.bottom)

    def crop(self, piece: Piece) -> torch.Tensor:
        """The piece's own ink, cut out to its box."""
        return self.ink[piece.top:piece.bottom, piece.left:piece.right] * self.points(piece)


@dataclass
class Found:
    """A field's ink as `find_fields` finds it: whether it was inverted, and its ink (None when blank)."""

    inverted: bool
    ink: FieldInk | None


def find_fields(greys: Sequence[Grey], invert: Invert = "auto") -> list[Found]:
    """Steps 1 to 3 for each greyscale field: its ink upright, in pieces."""
    inks = ink_batch(greys, invert, edges=False)  # a comb's lines are dropped here, not the digits on them
    made = iter(_found([ink for ink, _, blank in inks if not blank]))
    return [Found(inverted, None if blank else next(made)) for _, inverted, blank in inks]


def cut_fields(greys: Sequence[Grey], invert: Invert = "auto", digits: int | None = None,
               judge: Judge | None = None) -> list[CutField]:
    """Cut each greyscale field into its digits (`digits`: how many each holds, when known). Where a
    piece may hold several digits, `judge` (the model) picks the cut it is surest of, and whether to
    cut at all; without it, the cut goes through the column with the least ink."""
    return cut_found(find_fields(greys, invert), [digits] * len(greys), judge)


def cut_found(found: Sequence[Found], digits: Sequence[int | None], judge: Judge | None = None) -> list[CutField]:
    """Steps 4 and 5 for fields found by `find_fields` (their pieces are cut in place: cut each once),
    `digits` saying how many each holds where known."""
    fields = [f.ink for f in found]
    live = [f for f in fields if f is not None and f.pieces]
    reads = _Reads(judge) if judge is not None else None
    whole: set[tuple[int, Piece]] = set()  # kept whole already: the judge would say so again
    for _ in range(MAX_SPLIT - 1):
        wide = [(f, k) for f in live for k, p in enumerate(f.pieces)
                if _may_hold_several(p, f.height) and (id(f), p) not in whole]
        if not wide:
            break
        choices = _best_cuts([(f, f.pieces[k]) for f, k in wide], reads,
                             keep_whole=[f.pieces[k].width <= WHOLE_MAX * f.height for f, k in wide])
        for (f, k), parts in sorted(zip(wide, choices, strict=True), key=lambda fk: -fk[0][1]):
            whole.update((id(f), p) for p in parts if len(parts) == 1)
            f.pieces[k:k + 1] = parts
    if reads is not None:
        _cut_doubtful(live, reads)
        _join_strokes(live, reads)
    for ink, count in zip(fields, digits, strict=True):
        if ink is not None and ink.pieces and count is not None:
            _to_count(ink, count, reads)
    found_pieces = [(f, p) for f in live for p in f.pieces]
    probs = None
    if reads is not None and found_pieces:
        reads.sure(found_pieces)
        pixels = np.stack([reads.seen[id(f), p][0] for f, p in found_pieces])
        probs = np.stack([reads.seen[id(f), p][1] for f, p in found_pieces])
    else:
        pixels = _frames([f.crop(p) for f, p in found_pieces]).numpy()
    out, at = [], 0
    for one in found:
        pieces = one.ink.pieces if one.ink is not None else []
        boxes = [one.ink.box(p) for p in pieces] if one.ink is not None else []
        out.append(CutField(pixels[at:at + len(pieces)] if pieces else None, boxes, one.inverted,
                            probs[at:at + len(pieces)] if pieces and probs is not None else None))
        at += len(pieces)
    return out


def _found(inks: list[torch.Tensor]) -> list[FieldInk]:
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


def _field(ink: torch.Tensor, labels: torch.Tensor, slant: float = 0.0, pad: int = 0) -> FieldInk:
    """A field from its ink and the labels of its connected pieces: the pieces merged where they lie
    over one another, specks dropped."""
    pieces = _merge_overlapping(_pieces(ink, labels))
    if pieces:
        typical = float(np.median([p.mass for p in pieces]))
        pieces = [p for p in pieces if p.mass >= SPECK * typical]
    height = float(np.median([p.bottom - p.top for p in pieces])) if pieces else 0.0
    return FieldInk(ink, labels, pieces, height, slant, pad)


class _Reads:
    """The judge's reading of pieces of fields, each piece framed once however often the steps ask of
    it, and each frame judged once (pieces a few faint points apart frame alike): its frame and ten
    probabilities."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self.seen: dict[tuple[int, Piece], tuple[np.ndarray, np.ndarray]] = {}
        self.judged: dict[bytes, np.ndarray] = {}

    def sure(self, asked: Sequence[tuple[FieldInk, Piece]], crops: Sequence[torch.Tensor] | None = None) -> list[float]:
        """The log confidence in each (field, piece) asked (`crops`: their crops, where already cut out)."""
        new = {(id(f), p): k for k, (f, p) in enumerate(asked) if (id(f), p) not in self.seen}
        if new:
            frames = list(_frames([crops[k] if crops is not None else asked[k][0].crop(asked[k][1])
                                   for k in new.values()]).numpy())
            keys = [frame.tobytes() for frame in frames]
            unjudged = {key: frame for key, frame in zip(keys, frames, strict=True) if key not in self.judged}
            if unjudged:
                probs = self.judge(torch.from_numpy(np.stack(list(unjudged.values())))).numpy()
                self.judged |= zip(unjudged, probs, strict=True)
            self.seen |= {piece: (frame, self.judged[key]) for piece, frame, key in zip(new, frames, keys, strict=True)}
        return [math.log(float(self.seen[id(f), p][1].max())) for f, p in asked]


def _best_cuts(jobs: list[tuple[FieldInk, Piece]], reads: _Reads | None,
               keep_whole: list[bool]) -> list[list[Piece]]:
    """For each (field, piece), the piece cut in two where the judge is surest of both halves (or the
    piece whole, where `keep_whole` allows it, when the judge is surer of it whole, CUT_COST given);
    without a judge, cut through the column with the least ink."""
    whole = [-math.inf] * len(jobs)  # the log confidence in each piece read whole, where it may stay whole
    kept = [k for k, keep in enumerate(keep_whole) if keep]
    if reads is not None and kept:
        for k, log in zip(kept, reads.sure([jobs[k] for k in kept]), strict=True):
            whole[k] = log
    # A cut scores at most -CUT_COST: a piece read whole surer than that stays whole, its cuts untried.
    open_ = [k for k in range(len(jobs)) if whole[k] < -CUT_COST]
    ons, inks, places = [], [], []  # in each piece's box: its points, its ink, the columns to cut at
    for f, piece in (jobs[k] for k in open_):
        on = f.points(piece)
        ink = f.ink[piece.top:piece.bottom, piece.left:piece.right] * on
        lo, hi = max(1, round(CUT_FROM * piece.width)), piece.width - max(1, round(CUT_FROM * piece.width))
        if reads is None:
            at = [lo + int(ink.sum(dim=0)[lo:hi].argmin())] if hi > lo else []
        else:
            at = list(range(lo, hi, max(1, (hi - lo) // CUT_TRIES)))
        ons.append(on.numpy())
        inks.append(ink.numpy())
        places.append(np.array(at, dtype=np.int64))
    tried = [np.repeat(at[:, None], len(ink), axis=1) for ink, at in zip(inks, places, strict=True)]  # straight
    if reads is not None and open_:
        seams = _seams(inks, places, [max(1, round(SEAM_REACH * jobs[k][0].height)) for k in open_])
        tried = [np.concatenate(both) for both in zip(tried, seams, strict=True)]
    cuts = [_halves(*jobs[k], points, ink_in_box, cuts_at)
            for k, points, ink_in_box, cuts_at in zip(open_, ons, inks, tried, strict=True)]
    chosen = [[piece] for _, piece in jobs]
    if reads is None:
        for k, options in zip(open_, cuts, strict=True):
            chosen[k] = [p for p, _ in options[-1]] if options else chosen[k]
        return chosen
    parts = [(jobs[k][0], part, crop) for k, options in zip(open_, cuts, strict=True)
             for option in options for part, crop in option]
    sure = iter(reads.sure([(f, part) for f, part, _ in parts], [crop for _, _, crop in parts]))
    for k, options in zip(open_, cuts, strict=True):
        best = whole[k]
        for option in options:
            score = sum(next(sure) for _ in option) - CUT_COST
            if score > best:
                best, chosen[k] = score, [part for part, _ in option]
    return chosen


def _cut_doubtful(fields: list[FieldInk], reads: _Reads) -> None:
    """Offer the cut to pieces a little narrower than SPLIT_ASPECT (from DOUBT_ASPECT) that the judge
    reads whole below DOUBT_SURE: two narrow digits that touch (the model is taught that two digits
    framed as one are no digit, `augment.pairs`)."""
    narrow = [(f, k) for f in fields for k, p in enumerate(f.pieces)
              if DOUBT_ASPECT * f.height < p.width <= SPLIT_ASPECT * f.height]
    if not narrow:
        return
    sure = reads.sure([(f, f.pieces[k]) for f, k in narrow])
    doubtful = [fk for fk, s in zip(narrow, sure, strict=True) if s < math.log(DOUBT_SURE)]
    if not doubtful:
        return
    choices = _best_cuts([(f, f.pieces[k]) for f, k in doubtful], reads, keep_whole=[True] * len(doubtful))
    for (f, k), parts in sorted(zip(doubtful, choices, strict=True), key=lambda fk: -fk[0][1]):
        f.pieces[k:k + 1] = parts  # from the right, so that k still means the same


def _join_strokes(fields: list[FieldInk], reads: _Reads) -> None:
    """Join neighbouring pieces, close and narrow enough together to be one digit, where the judge is
    surer of them joined than of both alone (its two confidences multiplied, as `_best_cuts` weighs a
    cut), or where one is a fragment (under FRAGMENT of the digit height): the surest such joins first,
    in rounds, until none is left."""
    while True:
        pairs = [(f, k) for f in fields for k in range(len(f.pieces) - 1) if _joinable(f, k)]
        if not pairs:
            return
        asked = [(f, p) for f, k in pairs for p in (f.pieces[k], f.pieces[k + 1], _union(f.pieces[k], f.pieces[k + 1]))]
        sure = iter(reads.sure(asked))
        gains = []
        for f, k in pairs:
            alone = next(sure) + next(sure)
            joined = next(sure)
            fragment = min(p.bottom - p.top for p in f.pieces[k:k + 2]) < FRAGMENT * f.height
            if fragment or joined > alone:
                gains.append((joined - alone + fragment, f, k))
        if not gains:
            return
        taken: set[tuple[int, int]] = set()
        joins: list[tuple[FieldInk, int]] = []
        for _, f, k in sorted(gains, key=lambda g: -g[0]):
            if not {(id(f), k), (id(f), k + 1)} & taken:
                taken |= {(id(f), k), (id(f), k + 1)}
                joins.append((f, k))
        for f, k in sorted(joins, key=lambda fk: -fk[1]):  # from the right, so that k still means the same
            f.pieces[k:k + 2] = [_union(f.pieces[k], f.pieces[k + 1])]


def _joinable(f: FieldInk, k: int) -> bool:
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


def _pieces(ink: torch.Tensor, labels: torch.Tensor) -> list[Piece]:
    """Each connected piece (each label) as a Piece, left to right."""
    ys, xs = labels.nonzero(as_tuple=True)
    found, which = labels[ys, xs].unique(return_inverse=True)

    def least(values: torch.Tensor) -> list[int]:
        return torch.zeros(len(found), dtype=values.dtype).scatter_reduce(
            0, which, values, "amin", include_self=False).tolist()

    lefts, tops, rights, bottoms = least(xs), least(ys), least(-xs), least(-ys)
    masses = torch.zeros(len(found)).index_add(0, which, ink[ys, xs]).tolist()
    pieces = [Piece(frozenset({label}), left, 1 - right, top, 1 - bottom, mass)
              for label, left, right, top, bottom, mass
              in zip(found.tolist(), lefts, rights, tops, bottoms, masses, strict=True)]
    return sorted(pieces, key=lambda p: (p.left + p.right) / 2)


def _halves(f: FieldInk, piece: Piece, on: np.ndarray, ink: np.ndarray,
            seams: np.ndarray) -> list[list[tuple[Piece, torch.Tensor]]]:
    """The piece (its points `on` and its `ink`, in its box) cut along each of the `seams` (in each of
    its rows, the first column right of the cut): its left and right parts with their crops (as `FieldInk.crop`
    gives them), for each way of parting its points that leaves some on both sides."""
    lefts = on[None] & (np.arange(on.shape[1]) < seams[:, :, None])
    partings = {np.packbits(left).tobytes(): k for k, left in reversed(list(enumerate(lefts)))
                if left.any() and (on & ~left).any()}
    kept = sorted(partings.values())  # of the cuts that part the points alike, the first
    seams, lefts = seams[kept], lefts[kept]
    sides = [(points, *_extents(np.logical_or.reduce(points, axis=2)), *_extents(np.logical_or.reduce(points, axis=1)))
             for points in (lefts, on[None] & ~lefts)]
    # Above and below the piece's rows, each cut runs on straight.
    rows = f.ink.shape[0]
    cuts = np.concatenate([np.repeat(seams[:, :1], piece.top, axis=1), seams,
                           np.repeat(seams[:, -1:], rows - piece.bottom, axis=1)], axis=1) + piece.left
    out = []
    for k, cut in enumerate(cuts):
        before = cut if piece.before is None else np.minimum(cut, piece.before)
        after = cut if piece.after is None else np.maximum(cut, piece.after)
        parts = []
        bounds = ((piece.after, tuple(before.tolist())), (tuple(after.tolist()), piece.before))
        for (points, tops, bottoms, firsts, lasts), (start, end) in zip(sides, bounds, strict=True):
            top, bottom, left, right = int(tops[k]), int(bottoms[k]), int(firsts[k]), int(lasts[k])
            crop = ink[top:bottom, left:right] * points[k, top:bottom, left:right]
            parts.append((Piece(piece.labels, piece.left + left, piece.left + right, piece.top + top,
                                piece.top + bottom, float(crop.sum()), start, end), torch.from_numpy(crop)))
        out.append(parts)
    return out


def _extents(inked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each line of flags (N x L, each with a flag set), the first set and one past the last."""
    return inked.argmax(axis=1), inked.shape[1] - inked[:, ::-1].argmax(axis=1)


def _seams(inks: list[np.ndarray], places: list[np.ndarray], reaches: list[int]) -> list[np.ndarray]:
    """For each of the columns `places` of each ink, the cut from its top row to its bottom one that
    crosses the least ink, moving at most one column from row to row and at most `reach` from the place
    (a straight cut where that is as good): in each row, the first column right of the cut. All are
    found together, the shorter inks padded below with rows that cost nothing."""
    rows, reach = max(ink.shape[0] for ink in inks), max(reaches)
    offsets = np.arange(-reach, reach + 1)
    columns, costs = [], []
    for ink, at, own in zip(inks, places, reaches, strict=True):
        height, width = ink.shape
        column = at[:, None] + offsets[None, :]
        allowed = (abs(offsets) <= own) & (column >= 1) & (column < width)
        cost = np.where(allowed, ink[:, column.clip(0, width - 1)], np.inf)
        columns.append(column)
        costs.append(np.pad(cost.astype(np.float32), ((0, rows - height), (0, 0), (0, 0))))
    cost = np.concatenate(costs, axis=1)  # rows x cuts x columns
    total, came = cost[0], np.zeros(cost.shape, dtype=np.int8)  # came: the column a cut came from, -1, 0 or 1
    left, right = np.full_like(total, np.inf), np.full_like(total, np.inf)
    for row in range(1, rows):
        left[:, 1:] = total[:, :-1] + SEAM_TURN
        right[:, :-1] = total[:, 1:] + SEAM_TURN
        best = np.minimum(np.minimum(left, total), right)
        came[row] = np.where(best == total, 0, np.where(best == left, -1, 1))
        total = best + cost[row]
    which = np.arange(cost.shape[1])
    at = total.argmin(axis=1)
    path = np.empty((cost.shape[1], rows), dtype=np.int64)
    for row in range(rows - 1, -1, -1):
        path[:, row] = at
        at = at + came[row, which, at]
    seams, start = [], 0
    for ink, column in zip(inks, columns, strict=True):
        cut = path[start:start + len(column), :ink.shape[0]]
        seams.append(np.take_along_axis(column, cut, axis=1))
        start += len(column)
    return seams


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
    """Pieces `a` and `b` (`a` the left one) as one."""
    return Piece(a.labels | b.labels, min(a.left, b.left), max(a.right, b.right), min(a.top, b.top),
                 max(a.bottom, b.bottom), a.mass + b.mass, a.after, b.before)


def _may_hold_several(piece: Piece, height: float) -> bool:
    """Whether a piece is wide enough, against the field's digit height, to hold several digits."""
    return piece.width > SPLIT_ASPECT * height


def _to_count(f: FieldInk, digits: int, reads: _Reads | None) -> None:
    """Join the narrowest neighbouring pair, or cut a piece in two, until there are `digits`: the
    widest piece, or with the judge, the piece whose best cut it is surer of than of the piece whole
    by the most (a narrow pair of a 1 and a digit read whole as that digit, rather than a wide 0)."""
    while len(f.pieces) > digits:
        k = min(range(len(f.pieces) - 1), key=lambda i: f.pieces[i + 1].right - f.pieces[i].left)
        f.pieces[k:k + 2] = [_union(f.pieces[k], f.pieces[k + 1])]
    while len(f.pieces) < digits:
        if reads is None:
            k = max(range(len(f.pieces)), key=lambda i: f.pieces[i].width)
            parts = _best_cuts([(f, f.pieces[k])], reads, keep_whole=[False])[0]
        else:
            cuts = _best_cuts([(f, p) for p in f.pieces], reads, keep_whole=[False] * len(f.pieces))
            whole = reads.sure([(f, p) for p in f.pieces])
            gains = [sum(reads.sure([(f, q) for q in parts])) - sure if len(parts) > 1 else -math.inf
                     for parts, sure in zip(cuts, whole, strict=True)]
            k = max(range(len(f.pieces)), key=gains.__getitem__)
            parts = cuts[k]
        if len(parts) < 2:
            break
        f.pieces[k:k + 1] = parts


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
