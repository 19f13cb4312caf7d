"""The line reader (lines.py), `fit --fields` (linefit.py), and how `run --field` weighs it against the segmenter."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from digitscan import linefit
from digitscan.cli import main
from digitscan.decode import load_grey
from digitscan.fields import FIELD_SIDE, FieldInk, find_fields
from digitscan.lines import (
    BLANK,
    LINE_HEIGHT,
    LINE_INK,
    LINE_MARGIN,
    LineReader,
    LineReading,
    decode,
    line_images,
    load_line_archive,
)
from digitscan.model import WeightsError, default_weights
from digitscan.scorer import Reading, Scorer, _confidence, _surer
from digitscan.synth import field
from digitscan.trainingdata import load_mnist

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "fields"


def _scores(path: list[int], sure: float = 8.0) -> torch.Tensor:
    """1 x T x 11 scores whose best path is `path` (one class a step)."""
    scores = torch.zeros(1, len(path), BLANK + 1)
    scores[0, torch.arange(len(path)), torch.tensor(path)] = sure
    return scores


def test_decode_joins_repeats_keeps_digits_a_blank_parts_and_gives_the_texts_probability():
    b = BLANK
    reading = decode(_scores([b, 4, 4, b, 4, 7, 7, b]), torch.tensor([8]))[0]
    assert reading.text == "447"
    assert len(reading.probs) == 3 and all(len(p) == 10 and math.isclose(sum(p), 1, rel_tol=1e-5)
                                           for p in reading.probs)
    assert [max(range(10), key=p.__getitem__) for p in reading.probs] == [4, 4, 7]
    assert 0.9 < reading.confidence <= 1.0
    doubtful = decode(_scores([b, 4, b, 7, b], sure=1.5), torch.tensor([5]))[0]
    assert doubtful.text == "47" and doubtful.confidence < reading.confidence


def test_decode_reads_only_a_lines_own_steps_and_nothing_from_blanks():
    b = BLANK
    scores = torch.cat([_scores([b, 3, b, 9, 9, 9]), _scores([b, b, b, b, b, b])])
    first, empty = decode(scores, torch.tensor([3, 6]))
    assert first.text == "3"  # the 9s lie in the padding past its 3 steps
    assert empty == LineReading("", 0.0, [])


def test_line_images_scale_the_ink_to_the_lines_ink_height_with_paper_around():
    ink = torch.zeros(40, 100)
    ink[10:30, 20:60] = 1.0  # 20 rows x 40 columns of ink
    line, blank = line_images([FieldInk(ink, torch.zeros_like(ink, dtype=torch.long), [], 20.0), None])
    assert line.shape == (LINE_HEIGHT, round(40 * LINE_INK / 20) + 2 * LINE_MARGIN)
    inked = (line > 0.5).nonzero()
    top = (LINE_HEIGHT - LINE_INK) // 2
    assert int(inked[:, 0].min()) == top and int(inked[:, 0].max()) == top + LINE_INK - 1
    assert int(inked[:, 1].min()) == LINE_MARGIN
    assert blank.shape[0] == LINE_HEIGHT and float(blank.sum()) == 0


def test_the_shipped_line_reader_reads_most_example_fields_whole():
    labels = {row["path"]: row["text"] for row in csv.DictReader((EXAMPLES / "labels.csv").open())}
    scorer = Scorer(device="cpu", workers=0, field=True)
    assert scorer.lines is not None
    found = find_fields([load_grey(str(EXAMPLES / name), FIELD_SIDE) for name in labels])
    readings = scorer.lines.read(line_images([f.ink for f in found]))
    right = sum(r.text == text for r, text in zip(readings, labels.values(), strict=True))
    assert right >= len(labels) - 2, [r.text for r in readings]


def test_a_line_archive_that_is_not_one_is_refused_in_one_line(tmp_path):
    with pytest.raises(WeightsError, match=r"does not read N x 1 x 32 x W lines \(RuntimeError: mm: mat1") as refused:
        load_line_archive(default_weights())  # DigitNet's archive: 28 x 28 in, 10 scores out
    assert "\n" not in str(refused.value)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not an archive")
    with pytest.raises(WeightsError, match="not a TorchScript archive"):
        load_line_archive(junk)


def _readings(text: str, confidence: float) -> list[Reading]:
    each = confidence ** (1 / len(text))
    return [Reading(int(d), each, (10 * k, 0, 10 * k + 9, 20), [each if j == int(d) else 0.0 for j in range(10)])
            for k, d in enumerate(text)]


def _line(text: str, confidence: float) -> LineReading:
    return LineReading(text, confidence, [[0.9 if j == int(d) else 0.1 / 9 for j in range(10)] for d in text])


def test_the_surer_reading_is_kept_its_digits_in_the_segmenters_boxes():
    cut = _readings("1234", 0.5)
    chosen = _surer(cut, _line("1284", 0.8))
    assert "".join(str(r.digit) for r in chosen) == "1284"
    assert [r.box for r in chosen] == [r.box for r in cut]
    assert _surer(cut, _line("1284", 0.4)) is cut  # less sure than the segmenter
    assert _surer(cut, _line("12845", 0.99)) is cut  # as many digits, or no boxes to put them in
    assert _surer(cut, _line("1234", 0.99)) is cut  # the same text: the segmenter's own readings


def test_a_fields_confidence_falls_where_the_line_reader_read_another_text():
    cut = _readings("1234", 0.81)
    assert math.isclose(_confidence(cut, None), 0.81)
    assert math.isclose(_confidence(cut, _line("1234", 0.6)), 0.81)  # both read it: the digits' product
    assert math.isclose(_confidence(cut, _line("1284", 0.64)), math.sqrt(0.81 * 0.36))
    assert math.isclose(_confidence(cut, _line("123", 0.99)), math.sqrt(0.81 * 0.01))


class _SaysTwelve(torch.nn.Module):
    """A line reader sure of "12" in any line."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = max(4, x.shape[3] // 4)
        path = torch.full((steps,), 10, dtype=torch.long)  # blanks...
        path[1], path[3] = 1, 2  # ...and a 1 and a 2
        return torch.nn.functional.one_hot(path, 11).float().mul(20.0).expand(x.shape[0], steps, 11)


def test_run_field_reads_with_the_line_reader_given_and_records_it(runner, tmp_path, monkeypatch, mnist_root):
    """A line reader sure of "12" decides the count and, surer than the segmenter, the text of a field of
    a 5 and an 8; the settings record its sha256, and --resume with another line reader is refused (with
    the same one, a field's JSONL file is continued)."""
    monkeypatch.chdir(tmp_path)
    torch.jit.script(_SaysTwelve()).save("twelve.pt")
    rng = np.random.default_rng(0)
    images, labels = load_mnist(mnist_root, train=True)
    picks = [int(np.nonzero(labels.numpy() == d)[0][-1]) for d in (5, 8)]
    field([images[i].numpy() for i in picks], rng).save("field.png")

    alone = runner.invoke(main, ["run", "field.png", "--field", "--format", "jsonl"])
    assert alone.exit_code == 0 and json.loads(alone.stdout)["text"] == "58"
    told = runner.invoke(main, ["run", "field.png", "--field", "--line-weights", "twelve.pt", "--out", "r.jsonl"])
    assert told.exit_code == 0, told.output
    row = json.loads(Path("r.jsonl").read_text())
    assert row["text"] == "12" and len(row["digits"]) == 2
    assert [d["box"] for d in row["digits"]] == [d["box"] for d in json.loads(alone.stdout)["digits"]]
    settings = json.loads(Path("r.jsonl.settings.json").read_text())
    assert settings["lines"] and settings["lines"] != settings["weights"]
    again = runner.invoke(main, ["run", "field.png", "--field", "--out", "r.jsonl", "--resume"])
    assert again.exit_code == 2 and "--line-weights" in again.stderr
    same = runner.invoke(main, ["run", "field.png", "--field", "--line-weights", "twelve.pt", "--out", "r.jsonl",
                                "--resume"])
    assert same.exit_code == 0, same.output
    assert len(Path("r.jsonl").read_text().splitlines()) == 1  # its one field was read already


def test_line_weights_need_field_and_must_be_a_line_reader(runner, tmp_path):
    image = EXAMPLES / "scan_4.png"
    wrong = runner.invoke(main, ["run", str(image), "--line-weights", str(default_weights())])
    assert wrong.exit_code == 2 and "--field" in wrong.stderr
    digit_net = runner.invoke(main, ["run", str(image), "--field", "--line-weights", str(default_weights())])
    assert digit_net.exit_code == 2 and "does not read N x 1 x 32 x W lines" in digit_net.stderr
    assert "Traceback" not in digit_net.output


def test_fit_fields_trains_a_line_reader_that_run_field_can_use(runner, mnist_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(main, ["fit", "--fields", "--scratch", "--data", str(mnist_root), "--limit", "60",
                                  "--epochs", "2", "--out", "mine.pt"])
    assert result.exit_code == 0, result.output
    card = json.loads(Path("mine.json").read_text())
    assert card["model"] == "LineNet" and card["train_fields"] == 120 and len(card["epochs"]) == 2
    assert card["epochs"][1]["loss"] < card["epochs"][0]["loss"]
    assert "fit --fields" in card["command"]
    assert isinstance(LineReader(Path("mine.pt")).read([torch.zeros(LINE_HEIGHT, 40)])[0].text, str)
    used = runner.invoke(main, ["run", str(EXAMPLES / "scan_4.png"), "--field", "--line-weights", "mine.pt"])
    assert used.exit_code == 0, used.output


def test_fit_fields_labeled_trains_on_the_labelled_fields_and_names_what_it_skips(runner, mnist_root, tmp_path,
                                                                                     monkeypatch):
    """`fit --fields --labeled` adds the fields of a corrections CSV (labels of several digits) to the
    training lines, repeated to LABELLED_SHARE of them; single digits are the digit model's; an unreadable
    file and a blank field are skipped by name."""
    monkeypatch.chdir(tmp_path)
    Image.open(EXAMPLES / "scan_4.png").save("a.png")
    Image.open(EXAMPLES / "touching_5.png").save("b.png")
    Image.new("L", (200, 60), 240).save("blank.png")
    Path("broken.png").write_bytes(b"not an image")
    Image.open(EXAMPLES.parent / "scans" / "bitmap_1.bmp").save("single.png")
    Path("corrections.csv").write_text("path,label\na.png,0692\nb.png,23582\nblank.png,12\nbroken.png,34\n"
                                       "single.png,1\n")
    logged: list[str] = []
    own = linefit.labelled_lines(Path("corrections.csv"), logged.append)
    assert [text for _, text in own] == ["0692", "23582"]
    assert all(line.dtype == torch.uint8 and line.shape[0] == LINE_HEIGHT for line, _ in own)
    assert any("broken.png" in m for m in logged) and any("blank.png: blank" in m for m in logged)
    result = runner.invoke(main, ["fit", "--fields", "--scratch", "--data", str(mnist_root), "--limit", "50",
                                  "--epochs", "1", "--labeled", "corrections.csv", "--out", "mine.pt"])
    assert result.exit_code == 0, result.output
    assert "added 2 labelled fields from corrections.csv, each 15 times" in result.stderr  # 0.3 x 100 / 2
    card = json.loads(Path("mine.json").read_text())
    assert card["labeled"] == "corrections.csv" and card["train_fields"] == 100 + 2 * 15


def test_fit_fields_refuses_the_digit_models_flags(runner, mnist_root, tmp_path):
    result = runner.invoke(main, ["fit", "--fields", "--data", str(mnist_root), "--teacher", "t.pt",
                                  "--calibrate", "0", "--out", str(tmp_path / "x.pt")])
    assert result.exit_code == 2
    assert "--calibrate, --teacher are for the digit model" in result.stderr
    assert not (tmp_path / "x.pt").exists()


def test_a_blank_field_stays_blank_with_the_line_reader(tmp_path):
    Image.new("L", (200, 60), 240).save(tmp_path / "blank.png")
    result = [r for batch in Scorer(device="cpu", workers=0, field=True).score([str(tmp_path / "blank.png")])
              for r in batch][0]
    assert result.status == "blank" and result.text is None
