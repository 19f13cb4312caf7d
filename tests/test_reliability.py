"""Bad input never stops a run and never loses a result: statuses, messages, atomic output, Ctrl-C, resume."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
from conftest import draw_digit
from corpus import build_corpus

from digitscan import dataset as dataset_module
from digitscan import writers
from digitscan.cli import main
from digitscan.run import RunOptions, run
from digitscan.scorer import Result, Scorer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, build_corpus(folder)


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_every_awkward_file_gets_exactly_one_row_with_the_right_status(runner, corpus):
    folder, expect = corpus
    result = runner.invoke(main, ["run", str(folder), "-q", "--format", "jsonl", "--workers", "2",
                                  "--batch-size", "4"])
    assert result.exit_code == 1  # some inputs are errors; everything else is scored
    records = [json.loads(line) for line in result.stdout.splitlines()]
    got = {Path(r["path"]).name: r for r in records}
    assert len(records) == len(got) == len(expect)
    for name, (status, fragment) in expect.items():
        assert got[name]["status"] == status, (name, got[name])
        if status == "error":
            assert fragment in got[name]["error"], (name, got[name]["error"])
            assert got[name]["digit"] is None and got[name]["confidence"] is None
    readable = [r for n, r in got.items() if expect[n][0] == "ok"]
    assert {r["digit"] for r in readable} == {7}, {n: r["digit"] for n, r in got.items() if r["digit"] != 7}


def test_errors_are_reported_on_stderr_with_quiet(runner, corpus):
    folder, expect = corpus
    result = runner.invoke(main, ["run", str(folder), "-q", "--out", "-"])
    errors = sum(1 for s, _ in expect.values() if s == "error")
    assert f"{errors} of {len(expect)} images could not be read" in result.stderr


def test_a_worker_that_dies_costs_one_row_not_the_run(tmp_path, monkeypatch):
    for k in range(12):
        draw_digit().save(tmp_path / f"{k:02d}.png")
    real = dataset_module.load_grey

    def crashing(source, *args):
        if str(source).endswith("05.png"):
            os._exit(3)  # what a segfault in a decoder looks like from the outside
        return real(source, *args)

    monkeypatch.setattr(dataset_module, "load_grey", crashing)
    scorer = Scorer(workers=2, batch_size=3)
    paths = sorted(str(p) for p in tmp_path.iterdir())
    results = [r for batch in scorer.score(paths) for r in batch]
    assert [r.path for r in results] == paths
    crashed = [r for r in results if r.status == "error"]
    assert [Path(r.path).name for r in crashed] == ["05.png"] and "crashed" in crashed[0].error
    assert all(r.status == "ok" for r in results if r not in crashed)


def test_a_preprocessing_failure_costs_one_row_not_the_batch(tmp_path, monkeypatch):
    sizes = [(120, 110), (121, 111), (77, 99), (120, 112)]
    for k, size in enumerate(sizes):
        draw_digit(size=size).save(tmp_path / f"{k}.png")
    real = dataset_module.prepare_batch

    def failing(greys, *args):
        if any(g.shape == (99, 77) for g in greys):
            raise ValueError("a bug that only this image triggers")
        return real(greys, *args)

    monkeypatch.setattr(dataset_module, "prepare_batch", failing)
    paths = sorted(str(p) for p in tmp_path.iterdir())
    results = [r for batch in Scorer(workers=0, batch_size=4).score(paths) for r in batch]
    assert [r.status for r in results] == ["ok", "ok", "error", "ok"]
    assert "unexpected failure: ValueError: a bug that only this image triggers" in results[2].error
    assert all(r.digit == 7 for r in results if r.status == "ok")


def test_csv_output_appears_only_when_complete(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("previous results\n")
    writer = writers.Writer(str(target), "csv")
    writer.write([Result("a.png", 7, 0.99, True, "ok")])
    assert target.read_text() == "previous results\n"  # a crash now would leave the old file untouched
    writer.close()
    assert [r["path"] for r in read_csv(target.read_text())] == ["a.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_ctrl_c_keeps_the_rows_already_scored_and_resume_finishes(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    for k in range(40):
        draw_digit().save(scans / f"{k:02d}.png")
    out = tmp_path / "out.csv"

    def interrupt_after_two_batches(done: int) -> None:
        if done >= 16:
            raise KeyboardInterrupt

    opts = RunOptions(out=str(out), fmt="csv", batch_size=8, workers=0, quiet=True)
    first = run([str(scans)], opts, on_batch=interrupt_after_two_batches)
    assert first.interrupted and first.tally.total == 16
    kept = read_csv(out.read_text())
    assert len(kept) == 16  # the CSV was finished and moved into place

    opts.resume = True
    second = run([str(scans)], opts)
    assert second.skipped == 16 and second.tally.total == 24 and not second.interrupted
    paths = [r["path"] for r in read_csv(out.read_text())]
    assert sorted(paths) == sorted(str(p) for p in scans.iterdir()) and len(set(paths)) == 40


def test_cli_says_how_many_rows_were_kept_on_ctrl_c(runner, tmp_path, monkeypatch):
    for k in range(6):
        draw_digit().save(tmp_path / f"{k}.png")
    calls = []
    real_write = writers.Writer.write

    def write_then_interrupt(self, batch):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_write(self, batch)

    monkeypatch.setattr(writers.Writer, "write", write_then_interrupt)
    out = tmp_path / "r.jsonl"
    result = runner.invoke(main, ["run", str(tmp_path), "--batch-size", "2", "--workers", "0", "--out", str(out)])
    assert result.exit_code == 130
    assert "interrupted: 2 results kept" in result.stderr and "--resume" in result.stderr
    assert len(out.read_text().splitlines()) == 2


def test_resume_jsonl_drops_a_half_written_last_line(runner, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    for k in range(5):
        draw_digit().save(scans / f"{k}.png")
    out = tmp_path / "r.jsonl"
    first = json.dumps({"path": str(scans / "0.png"), "digit": 7, "confidence": 0.9, "inverted": True,
                        "status": "ok", "error": None})
    out.write_text(first + "\n" + '{"path": "' + str(scans / "1.png") + '", "dig')  # killed mid-line
    result = runner.invoke(main, ["run", str(scans), "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["path"] for r in records) == sorted(str(p) for p in scans.iterdir())
    assert "already scored" in result.stderr


def test_resume_refuses_json_and_stdout(runner, tmp_path):
    draw_digit().save(tmp_path / "a.png")
    assert runner.invoke(main, ["run", str(tmp_path), "--out", str(tmp_path / "r.json"), "--resume"]).exit_code == 2
    assert runner.invoke(main, ["run", str(tmp_path), "--resume"]).exit_code == 2


def test_a_few_large_files_are_shared_out_among_the_workers(tmp_path, monkeypatch):
    """Under one batch, small files are read in this process; large ones (photos) go to the workers."""
    from digitscan import scorer as scorer_module

    for k in range(5):
        draw_digit(size=(400, 300)).save(tmp_path / f"{k}.png")
    paths = sorted(str(p) for p in tmp_path.iterdir())
    scorer = Scorer(workers=2, batch_size=256)
    assert scorer._plan(paths, list(range(5))) == (0, 256)
    monkeypatch.setattr(scorer_module, "LARGE_INPUT", 1000)
    assert scorer._plan(paths, list(range(5))) == (2, 3)
    shared = [r for batch in scorer.score(paths) for r in batch]
    alone = [r for batch in Scorer(workers=0).score(paths) for r in batch]
    assert [(r.path, r.digit, r.status) for r in shared] == [(r.path, r.digit, r.status) for r in alone]
    assert [r.path for r in shared] == paths and all(r.digit == 7 for r in shared)
