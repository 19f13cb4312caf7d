"""The shipped weights on the shipped examples, and the installed package from another folder."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import EXAMPLES, REPO

from digitscan.cli import main
from digitscan.model import card_path, default_weights, sha256


def labels() -> dict[str, int]:
    with open(EXAMPLES / "labels.csv", newline="") as f:
        return {row["path"]: int(row["digit"]) for row in csv.DictReader(f)}


def test_examples_are_varied_and_labelled():
    truth = labels()
    assert len(truth) >= 30
    suffixes = {Path(p).suffix for p in truth}
    assert {".png", ".jpg", ".bmp"} <= suffixes
    assert all((EXAMPLES / p).is_file() for p in truth)


def test_accuracy_on_examples_is_at_least_95_percent(runner):
    result = runner.invoke(main, ["run", str(EXAMPLES / "scans"), "-q", "--format", "jsonl"])
    assert result.exit_code == 0
    records = [json.loads(line) for line in result.stdout.splitlines()]
    truth = labels()
    assert len(records) == len(truth)
    correct = sum(r["digit"] == truth["scans/" + Path(r["path"]).name] for r in records)
    assert correct / len(truth) >= 0.95, f"{correct}/{len(truth)}"
    assert {r["inverted"] for r in records} == {True, False}  # both polarities are in the examples


@pytest.mark.parametrize("kind", ["continental_one", "crossed_seven", "drawing_canvas"])
def test_continental_forms_and_drawing_canvases_are_read_right(runner, kind):
    """A flagged 1 is not a 7, a crossed 7 is not a 4, a drawing app's canvas is not a frame."""
    truth = labels()
    files = sorted((EXAMPLES / "scans").glob(f"{kind}_*"))
    assert len(files) >= 5
    result = runner.invoke(main, ["run", *map(str, files), "-q", "--format", "jsonl"])
    assert result.exit_code == 0
    read = {Path(r["path"]).name: r["digit"] for r in map(json.loads, result.stdout.splitlines())}
    assert read == {f.name: truth[f"scans/{f.name}"] for f in files}


def test_shipped_archive_loads_with_plain_torch_and_matches_its_card():
    archive = default_weights()
    card = json.loads(card_path(archive).read_text())
    assert card["sha256"] == sha256(archive)
    assert card["mnist_test_accuracy"] >= 0.994  # a floor that a broken or mis-trained archive fails
    assert card["command"].startswith("digitscan fit ")
    model = torch.jit.load(str(archive))  # no digitscan code needed
    model.eval()
    with torch.inference_mode():
        assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert float(model.temperature) == pytest.approx(card["calibration"]["temperature"], abs=1e-4)


def test_installed_console_script_works_from_another_folder(tmp_path):
    script = Path(sys.executable).with_name("digitscan")
    assert script.exists(), "install the package (pip install .) so the console script exists"
    where = "import digitscan.model as m; print(m.__file__); print(m.default_weights())"
    probe = subprocess.run([sys.executable, "-c", where],
                           cwd=tmp_path, capture_output=True, text=True, check=True)
    module, weights = (Path(p) for p in probe.stdout.splitlines())
    assert module.parent != REPO / "digitscan", "the installed package, not the source tree, must be imported"
    assert weights.is_file() and weights.parent == module.parent / "weights", "weights must travel in the package"
    done = subprocess.run([str(script), "run", str(EXAMPLES / "scans"), "--out", "results.csv", "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "results.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(labels())
    done = subprocess.run([str(script), "review", "results.csv"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0 and "<script" in (tmp_path / "review.html").read_text(), done.stderr


def test_ci_runs_the_readme_test_command_word_for_word():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    command = readme.split("This installs the test extras", 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0]
    assert "pytest" in command and command in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
