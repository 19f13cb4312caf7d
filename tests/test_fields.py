"""Fields of several digits: `run --field`, `--digits N`, and the cutting in fields.py."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import torch
from conftest import draw_digit
from PIL import Image, ImageDraw

from digitscan import fields as fields_module
from digitscan import review as review_module
from digitscan import scorer as scorer_module
from digitscan.cli import main
from digitscan.fields import cut_fields
from digitscan.scorer import Scorer
from digitscan.trainingdata import load_labelled

FIELDS = Path(__file__).resolve().parents[1] / "examples" / "fields"


def _labels() -> dict[str, str]:
    with open(FIELDS / "labels.csv", newline="") as f:
        return {str(FIELDS / row["path"]): row["text"] for row in csv.DictReader(f)}


def _row_field(shapes: list[str], gap: int = 14, comb: bool = False) -> Image.Image:
    """Crude digits (conftest.draw_digit) side by side on one line, optionally each in a printed box."""
    cells = [draw_digit(size=(60, 90), shape=shape, box=(12, 15, 48, 75)) for shape in shapes]
    width = len(cells) * 60 + (len(cells) - 1) * gap + 20
    img = Image.new("L", (width, 110), 235)
    for k, cell in enumerate(cells):
        img.paste(cell, (10 + k * (60 + gap), 10))
    if comb:
        draw = ImageDraw.Draw(img)
        draw.rectangle([4, 4, width - 5, 105], outline=60, width=2)
        for k in range(1, len(cells)):
            x = 10 + k * (60 + gap) - gap // 2
            draw.line([(x, 4), (x, 105)], fill=60, width=2)
    return img


def test_example_fields_read_as_their_labels(runner):
    truth = _labels()
    result = runner.invoke(main, ["run", str(FIELDS), "--field", "-q"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert [r["path"] for r in rows] == sorted(truth)
    right = sum(r["text"] == truth[r["path"]] for r in rows)
    assert right >= 11  # 12 of 15 today: a touching pair is the hard case
    combs = [r for r in rows if "comb" in r["path"]]
    assert [r["text"] for r in combs] == [truth[r["path"]] for r in combs]  # no box line read as a 1
    assert all(r["inverted"] == ("false" if "light_on_dark" in r["path"] else "true") for r in rows)


def test_digits_n_gives_every_field_n_digits_and_reads_no_worse(runner):
    truth = _labels()
    plain = runner.invoke(main, ["run", str(FIELDS), "--field", "-q"])
    right_plain = sum(r["text"] == truth[r["path"]] for r in csv.DictReader(plain.stdout.splitlines()))
    right = 0
    for length in (4, 5, 6):
        paths = [p for p, text in truth.items() if len(text) == length]
        result = runner.invoke(main, ["run", *paths, "--digits", str(length), "-q"])
        assert result.exit_code == 0, result.output
        rows = list(csv.DictReader(result.stdout.splitlines()))
        assert all(len(r["text"]) == length for r in rows)
        right += sum(r["text"] == truth[r["path"]] for r in rows)
    assert right >= right_plain


def test_digits_n_cuts_the_piece_whose_cut_reads_best_not_the_widest(runner):
    """In light_on_dark_6 (244714) the 1 and the last 4 touch and the segmenter alone reads them whole as a
    4 (24474): told there are 6, it cuts the pair, where the judge gains most, not the widest piece (the 2:
    214474). The line reader reads six digits, so `run --field` cuts the pair untold."""
    path = str(FIELDS / "light_on_dark_6.png")

    def text(scorer: Scorer) -> str | None:
        return [r for batch in scorer.score([path]) for r in batch][0].text

    assert text(Scorer(device="cpu", workers=0, field=True, segment_only=True)) == "24474"
    assert text(Scorer(device="cpu", workers=0, digits=6, segment_only=True)) == "244714"
    assert runner.invoke(main, ["run", path, "--field", "-q"]).stdout.splitlines()[1].split(",")[1] == "244714"


def test_jsonl_rows_carry_each_digit_with_its_box_and_probabilities(runner, tmp_path):
    image = _row_field(["seven", "one", "zero"])
    image.save(tmp_path / "field.png")
    result = runner.invoke(main, ["run", str(tmp_path / "field.png"), "--field", "--format", "jsonl", "--probs", "-q"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["text"] == "710" and "digit" not in row
    digits = row["digits"]
    assert [d["digit"] for d in digits] == [7, 1, 0]
    lefts = [d["box"][0] for d in digits]
    assert lefts == sorted(lefts)
    assert all(0 <= d["box"][0] < d["box"][2] <= image.width and 0 <= d["box"][1] < d["box"][3] <= image.height
               for d in digits)
    assert all(len(d["probs"]) == 10 and max(d["probs"]) == d["confidence"] for d in digits)
    assert math.isclose(row["confidence"], math.prod(d["confidence"] for d in digits), rel_tol=1e-4)


def test_a_digit_in_two_strokes_is_one_digit_and_a_comb_is_not_read():
    broken = _row_field(["one", "seven", "zero"])
    ImageDraw.Draw(broken).line([(84, 58), (160, 58)], fill=235, width=12)  # a gap across the 7's stem
    boxed = _row_field(["seven", "one", "zero", "one"], comb=True)
    cuts = cut_fields([np.asarray(broken), np.asarray(boxed)])
    assert len(cuts[0].boxes) == 3
    assert len(cuts[1].boxes) == 4


def _strokes_field(kinds: list[str]) -> Image.Image:
    """Digits drawn in strokes that do not touch: a 7 whose bar stops short of its stem, a 0 in two
    arcs; and plain 1s."""
    img = Image.new("L", (len(kinds) * 74 + 20, 110), 235)
    draw = ImageDraw.Draw(img)
    for k, kind in enumerate(kinds):
        x = 10 + 74 * k
        if kind == "seven":
            draw.line([(x + 10, 26), (x + 34, 26)], fill=20, width=7)
            draw.line([(x + 46, 26), (x + 40, 85)], fill=20, width=7)
        elif kind == "zero":
            draw.arc([x + 12, 25, x + 48, 85], 105, 255, fill=20, width=7)
            draw.arc([x + 12, 25, x + 48, 85], 285, 75, fill=20, width=7)
        else:
            draw.line([(x + 30, 25), (x + 30, 85)], fill=20, width=7)
    return img


def test_strokes_side_by_side_that_read_as_one_digit_are_joined(runner, tmp_path):
    """A 7's bar beside its stem (a fragment: far shorter than the line) and a 0's two arcs (which
    the model reads surer together than apart) are one digit each; 1s side by side stay apart."""
    _strokes_field(["seven", "zero", "one", "seven"]).save(tmp_path / "strokes.png")
    _strokes_field(["one", "one", "zero"]).save(tmp_path / "ones.png")
    result = runner.invoke(main, ["run", str(tmp_path), "--field", "--format", "jsonl", "-q"])
    assert result.exit_code == 0, result.output
    texts = {Path(r["path"]).name: r["text"] for r in map(json.loads, result.stdout.splitlines())}
    assert texts == {"strokes.png": "7017", "ones.png": "110"}


def test_field_flags_that_do_not_go_together_are_refused(runner, tmp_path):
    _row_field(["seven", "one"]).save(tmp_path / "f.png")
    for extra, words in ((["--probs"], "JSON or JSONL"), (["--frames", str(tmp_path / "frames")], "--frames")):
        result = runner.invoke(main, ["run", str(tmp_path / "f.png"), "--field", *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert words in result.output
        assert "Traceback" not in result.output


def _tiles(page: Path) -> list[dict]:
    html = page.read_text(encoding="utf-8")
    return json.loads(html.split('<script type="application/json" id="tiles">', 1)[1].split("</script>", 1)[0])


def test_review_of_field_results_gives_a_tile_per_field_with_each_digits_frame(runner, tmp_path):
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"r.{fmt}"
        assert runner.invoke(main, ["run", str(FIELDS), "--field", "-q", "-o", str(out)]).exit_code == 0
        result = runner.invoke(main, ["review", str(out), "--all", "-o", str(tmp_path / f"{fmt}.html")])
        assert result.exit_code == 0, result.output
    rows = {r["path"]: r for r in csv.DictReader((tmp_path / "r.csv").open(newline=""))}
    tiles = _tiles(tmp_path / "csv.html")
    assert tiles == _tiles(tmp_path / "jsonl.html")
    assert sorted(t["path"] for t in tiles) == sorted(rows) and len(tiles) == 15
    assert [t["confidence"] for t in tiles] == sorted(t["confidence"] for t in tiles)  # the least sure first
    for t in tiles:
        assert t["text"] == rows[t["path"]]["text"]
        assert "".join(str(d["digit"]) for d in t["digits"]) == t["text"]  # the same weights read the same
        for d in t["digits"]:
            frame = Image.open(io.BytesIO(base64.b64decode(d["frame"].split(",", 1)[1])))
            assert frame.size == (28, 28)
        scan = Image.open(io.BytesIO(base64.b64decode(t["scan"].split(",", 1)[1])))
        assert max(scan.size) <= review_module.FIELD_THUMB and scan.width > 2 * scan.height  # the whole field


def test_review_of_images_as_fields_and_with_digits_n(runner, tmp_path):
    _row_field(["seven", "one", "seven"]).save(tmp_path / "f.png")
    for extra, length in ((["--field"], 3), (["--digits", "2"], 2)):
        result = runner.invoke(main, ["review", str(tmp_path / "f.png"), *extra, "-o", str(tmp_path / "r.html")])
        assert result.exit_code == 0, result.output
        [tile] = _tiles(tmp_path / "r.html")
        assert len(tile["text"]) == len(tile["digits"]) == length


def test_review_cuts_fields_again_into_the_digits_run_was_told(runner, tmp_path):
    _row_field(["seven", "one", "seven"]).save(tmp_path / "f.png")
    runner.invoke(main, ["run", str(tmp_path / "f.png"), "--digits", "2", "-q", "-o", str(tmp_path / "r.csv")])
    result = runner.invoke(main, ["review", str(tmp_path / "r.csv"), "--all", "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    [tile] = _tiles(tmp_path / "r.html")
    assert len(tile["text"]) == len(tile["digits"]) == 2


def test_resume_continues_a_fields_jsonl_file(runner, tmp_path):
    """A field's JSONL row carries `digits` beside the columns: --resume still knows the file for its own."""
    _row_field(["seven", "one"]).save(tmp_path / "a.png")
    out = str(tmp_path / "r.jsonl")
    assert runner.invoke(main, ["run", str(tmp_path / "a.png"), "--field", "-q", "-o", out]).exit_code == 0
    _row_field(["one", "seven"]).save(tmp_path / "b.png")
    result = runner.invoke(main, ["run", str(tmp_path), "--field", "-q", "-o", out, "--resume"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["path"] for line in Path(out).read_text().splitlines()] == \
        [str(tmp_path / "a.png"), str(tmp_path / "b.png")]


def test_resume_refuses_another_digits_n(runner, tmp_path):
    _row_field(["seven", "one"]).save(tmp_path / "f.png")
    out = str(tmp_path / "r.csv")
    assert runner.invoke(main, ["run", str(tmp_path / "f.png"), "--digits", "2", "-q", "-o", out]).exit_code == 0
    result = runner.invoke(main, ["run", str(tmp_path / "f.png"), "--digits", "3", "-q", "-o", out, "--resume"])
    assert result.exit_code == 2 and "--digits" in result.output and "Traceback" not in result.output


def test_labelled_fields_give_their_digits_to_fit_and_eval(runner, tmp_path):
    """examples/fields/labels.csv (path,text): each field cut into as many digits as its label has."""
    truth = _labels()
    images, labels, skipped = load_labelled(FIELDS / "labels.csv")
    assert not skipped and images.shape == (sum(map(len, truth.values())), 28, 28)
    assert sorted(labels.tolist()) == sorted(int(d) for text in truth.values() for d in text)
    result = runner.invoke(main, ["eval", "--labeled", str(FIELDS / "labels.csv")])
    assert result.exit_code == 0, result.output
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("accuracy")][0]
    assert f"on {len(labels)} digits" in line and float(line.split()[1]) >= 0.85


def test_a_labelled_field_that_cannot_be_read_is_skipped_by_name(tmp_path):
    Image.new("L", (200, 60), 235).save(tmp_path / "empty.png")
    _row_field(["seven", "one"]).save(tmp_path / "f.png")
    (tmp_path / "c.csv").write_text("path,label\nempty.png,123\nf.png,71\n")
    images, labels, skipped = load_labelled(tmp_path / "c.csv")
    assert labels.tolist() == [7, 1] and len(images) == 2
    assert len(skipped) == 1 and "empty.png" in skipped[0] and "blank" in skipped[0]


def test_the_parts_of_each_cut_are_the_pieces_the_fields_masks_give():
    """`_halves` (every cut of a piece at once, in its box) gives parts whose cuts (`after`, `before`)
    say exactly which of the field's points are theirs: the same box, mass and crop, and together
    the piece's points, each once."""
    img = np.asarray(_strokes_field(["zero", "seven", "one"]).rotate(8, fillcolor=235))
    f = fields_module._found([fields_module.ink_batch([img], "auto", edges=False)[0][0]])[0]
    checked = 0

    def in_field(piece: fields_module.Piece) -> torch.Tensor:
        """The piece's points (`_Field.points`, in its box) placed in the whole field."""
        out = torch.zeros_like(f.labels, dtype=torch.bool)
        out[piece.top:piece.bottom, piece.left:piece.right] = f.points(piece)
        return out

    for piece in f.pieces:
        on = f.points(piece)
        ink = f.crop(piece).numpy()
        places = np.arange(1, piece.width)
        seams = fields_module._seams([ink], [places], [5])[0]
        straight = np.repeat(places[:, None], piece.bottom - piece.top, axis=1)
        for parts in fields_module._halves(f, piece, on.numpy(), ink, np.concatenate([straight, seams])):
            masks = [in_field(part) for part, _ in parts]
            assert not (masks[0] & masks[1]).any() and torch.equal(masks[0] | masks[1], in_field(piece))
            for (part, crop), mask in zip(parts, masks, strict=True):
                ys, xs = mask.nonzero(as_tuple=True)
                box = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
                assert (part.left, part.right, part.top, part.bottom) == box
                assert math.isclose(part.mass, float(f.ink[mask].sum()), rel_tol=1e-4, abs_tol=1e-4)
                assert torch.allclose(crop, f.crop(part))
                checked += 1
    assert checked > 100


def test_a_seam_goes_round_the_ink_that_a_straight_cut_would_cross():
    """Two strokes whose columns overlap, a thin gap winding between them: the seam through a place
    follows the gap and crosses no ink; the straight cut there crosses one of the strokes."""
    ink = np.zeros((40, 30), dtype=np.float32)
    for row in range(40):
        gap = 8 + row // 4  # the gap drifts right, from column 8 to 17
        ink[row, gap - 4:gap] = 1.0
        ink[row, gap + 1:gap + 5] = 1.0
    seam = fields_module._seams([ink], [np.array([12])], [10])[0][0]
    assert len(seam) == 40 and all(abs(int(c) - 12) <= 10 for c in seam)
    assert ink[np.arange(40), seam].sum() == 0
    assert ink[:, 12].sum() > 10


def test_a_touching_pair_whose_boxes_overlap_is_parted_along_a_seam(monkeypatch):
    """In the touching example 0202, the 0 and the 2 touch and share columns: the segmenter's cut winds
    between them (their boxes overlap); no cut straight down parts them well, and the pair was read 6202."""
    scorer = Scorer(device="cpu", workers=0, field=True, segment_only=True)
    [result] = next(scorer.score([str(FIELDS / "touching_4.png")]))
    assert result.text == "0202" and result.digits is not None
    zero, two = result.digits[0].box, result.digits[1].box
    assert two[0] < zero[2]
    monkeypatch.setattr(fields_module, "_seams", lambda inks, places, reaches: [
        np.repeat(at[:, None], len(ink), axis=1) for ink, at in zip(inks, places, strict=True)])
    assert next(scorer.score([str(FIELDS / "touching_4.png")]))[0].text != "0202"


def test_a_narrow_piece_read_whole_with_doubt_is_offered_the_cut():
    """Two narrow digits that touch make a piece narrower than SPLIT_ASPECT: it is cut where the judge
    reads it whole below DOUBT_SURE and surer in two; left whole where the judge is sure of it."""
    img = Image.new("L", (200, 110), 235)
    draw = ImageDraw.Draw(img)
    draw.rectangle([(20, 25), (30, 85)], fill=20)  # a 1, far from the pair
    draw.rectangle([(90, 25), (100, 85)], fill=20)  # two 1s joined by a bar at their feet: 50 px wide, 61 tall
    draw.rectangle([(130, 25), (140, 85)], fill=20)
    draw.rectangle([(90, 78), (140, 85)], fill=20)

    def judge(sure_of_wide: float):
        def read(frames: torch.Tensor) -> torch.Tensor:
            ink = frames > frames.amin()
            cols, rows = ink.any(dim=1).sum(dim=1), ink.any(dim=2).sum(dim=1)
            wide = cols > 0.5 * rows
            probs = torch.full((len(frames), 10), 0.01)
            probs[:, 1] = torch.where(wide, torch.tensor(sure_of_wide), torch.tensor(0.95))
            return probs
        return read

    grey = np.asarray(img)
    assert len(cut_fields([grey], judge=judge(0.3))[0].boxes) == 3
    assert len(cut_fields([grey], judge=judge(0.9))[0].boxes) == 2


def test_a_digit_with_a_long_bar_is_kept_whole_where_the_judge_is_sure_of_it(monkeypatch):
    """A 7 whose bar runs long is up to twice as wide as it is tall (WHOLE_MAX): whole, where the judge
    is surer of it than of any two parts; a piece wider than that is cut whatever the judge says."""
    img = Image.new("L", (260, 110), 235)
    draw = ImageDraw.Draw(img)
    draw.line([(20, 20), (130, 20), (95, 90)], fill=20, width=7)  # about 1.6 times as wide as tall
    draw.line([(200, 20), (200, 90)], fill=20, width=7)  # a 1, for the field's digit height

    def judge(frames: torch.Tensor) -> torch.Tensor:
        ink = frames > frames.amin()
        cols, rows = ink.any(dim=1).sum(dim=1), ink.any(dim=2).sum(dim=1)
        probs = torch.full((len(frames), 10), 0.01)
        probs[:, 7] = torch.where(cols >= 1.4 * rows, torch.tensor(0.99), torch.tensor(0.3))  # sure of it whole
        probs[:, 1] = torch.where(cols <= 0.5 * rows, torch.tensor(0.99), torch.tensor(0.01))
        return probs

    grey = np.asarray(img)
    assert len(cut_fields([grey], judge=judge)[0].boxes) == 2
    monkeypatch.setattr(fields_module, "WHOLE_MAX", 1.5)
    assert len(cut_fields([grey], judge=judge)[0].boxes) == 3


def test_a_piece_read_whole_surely_enough_is_not_cut_and_no_piece_is_judged_twice():
    """A cut scores at most -CUT_COST, so a wide 7 the judge reads whole surer than that keeps it whole
    without its cuts being tried: the judge sees the 7 and the 1 once each, the frames the field is read from."""
    img = Image.new("L", (260, 110), 235)
    draw = ImageDraw.Draw(img)
    draw.line([(20, 20), (130, 20), (95, 90)], fill=20, width=7)  # a 7 about 1.6 times as wide as tall
    draw.line([(200, 20), (200, 90)], fill=20, width=7)
    judged = []

    def judge(frames: torch.Tensor) -> torch.Tensor:
        judged.extend(frames)
        probs = torch.full((len(frames), 10), 0.001)
        probs[:, 7] = 0.99
        return probs

    cut = cut_fields([np.asarray(img)], judge=judge)[0]
    assert len(cut.boxes) == 2 and len(judged) == 2
    assert cut.pixels is not None and np.array_equal(cut.pixels, torch.stack(judged).numpy())
    assert cut.probs is not None and cut.probs.shape == (2, 10)


def test_each_piece_of_the_example_fields_is_framed_and_judged_once(runner, monkeypatch):
    """The steps (cuts, doubtful pieces, joins) and the field's reading share the judge's readings:
    no frame reaches the model twice."""
    judged: list[bytes] = []
    original = scorer_module.frame_probabilities

    def recording(model, frames, device, weights):
        judged.extend(frame.numpy().tobytes() for frame in frames)
        return original(model, frames, device, weights)

    monkeypatch.setattr(scorer_module, "frame_probabilities", recording)
    result = runner.invoke(main, ["run", str(FIELDS), "--field", "-q"])
    assert result.exit_code == 0, result.output
    assert len(judged) > 100 and len(set(judged)) == len(judged)


def test_a_wide_digit_whose_halves_read_about_as_surely_stays_whole(monkeypatch):
    """A wide 0 (wider than tall) that the judge reads at 0.97, its halves each at 0.99 (a part of a
    wide digit reads as surely as a digit): the cut gains less than CUT_COST, so it stays one digit."""
    img = Image.new("L", (240, 110), 235)
    draw = ImageDraw.Draw(img)
    draw.ellipse([(20, 20), (110, 90)], outline=20, width=7)
    draw.line([(180, 20), (180, 90)], fill=20, width=7)  # a 1, for the field's digit height

    def judge(frames: torch.Tensor) -> torch.Tensor:
        ink = frames > frames.amin()
        cols, rows = ink.any(dim=1).sum(dim=1), ink.any(dim=2).sum(dim=1)
        probs = torch.full((len(frames), 10), 0.001)
        wide = cols >= 0.9 * rows
        probs[:, 0] = torch.where(wide, torch.tensor(0.97), torch.tensor(0.001))
        probs[:, 1] = torch.where(wide, torch.tensor(0.001), torch.tensor(0.99))
        return probs

    grey = np.asarray(img)
    assert len(cut_fields([grey], judge=judge)[0].boxes) == 2
    monkeypatch.setattr(fields_module, "CUT_COST", 0.0)
    assert len(cut_fields([grey], judge=judge)[0].boxes) == 3


def _slanted(img: Image.Image, shear: float) -> Image.Image:
    """The image sheared as a hand slants (the middle row stays; `shear` > 0 leans the writing right)."""
    return img.transform(img.size, Image.Transform.AFFINE, (1, shear, -shear * img.height / 2, 0, 1, 0),
                         resample=Image.Resampling.BILINEAR, fillcolor=235)


def test_the_slant_of_the_hand_is_measured_and_boxes_are_in_the_fields_own_pixels():
    """The slant (columns per row) comes from the near-vertical strokes, whatever the curves; the boxes,
    found upright, are given in the slanted field's pixels: together they hold all its ink."""
    field = _row_field(["one", "zero", "one", "zero"])
    for shear in (-0.2, 0.0, 0.3):
        grey = np.asarray(_slanted(field, shear))
        ink = fields_module.ink_batch([grey], "auto", edges=False)[0][0]
        assert abs(fields_module._slant(ink) + shear) < 0.05
        cut = cut_fields([grey])[0]
        assert len(cut.boxes) == 4
        covered = np.zeros(grey.shape, dtype=bool)
        for left, top, right, bottom in cut.boxes:
            covered[top:bottom, left:right] = True
        dark = grey < 128
        assert dark[~covered].sum() <= 0.01 * dark.sum()


def test_two_slanted_digits_that_touch_are_cut_along_the_slant(monkeypatch):
    """Two 1s leaning right, joined by a stroke: every cut straight down the field leaves a part with
    all of one and some of the other, or a leaning stroke (wide: the stand-in judge doubts it), so the
    pair stayed whole; upright, a cut between them leaves two narrow strokes it is sure of."""
    img = Image.new("L", (200, 110), 235)
    draw = ImageDraw.Draw(img)
    draw.line([(92, 20), (50, 90)], fill=20, width=8)
    draw.line([(137, 20), (95, 90)], fill=20, width=8)
    draw.line([(71, 55), (116, 55)], fill=20, width=6)

    def judge(frames: torch.Tensor) -> torch.Tensor:
        ink = frames > frames.amin()
        wide = ink.any(dim=1).sum(dim=1) > 0.5 * ink.any(dim=2).sum(dim=1)
        probs = torch.full((len(frames), 10), 0.01)
        probs[:, 1] = torch.where(wide, torch.tensor(0.3), torch.tensor(0.95))
        return probs

    grey = np.asarray(img)
    assert len(cut_fields([grey], judge=judge)[0].boxes) == 2
    monkeypatch.setattr(fields_module, "_slant", lambda ink: 0.0)
    assert len(cut_fields([grey], judge=judge)[0].boxes) == 1
