"""`digitscan run --engine ray`: on a local 2-CPU Ray instance, the same rows as the local engine."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import ray
import torch
from conftest import EXAMPLES, draw_digit

from digitscan.cli import main


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_ray_rows_equal_local_rows(runner, tmp_path, local_ray):
    for src in sorted((EXAMPLES / "scans").iterdir()):
        shutil.copy(src, tmp_path / src.name)
    draw_digit().point(lambda v: 230).save(tmp_path / "zz_blank.png")
    (tmp_path / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    args = ["run", str(tmp_path), "-q", "--format", "jsonl", "--probs", "--batch-size", "16"]
    local = runner.invoke(main, args)
    distributed = runner.invoke(main, [*args, "--engine", "ray", "--actors", "2"])
    assert local.exit_code == distributed.exit_code == 1  # the broken file, on both engines
    a, b = jsonl(local.stdout), jsonl(distributed.stdout)
    assert len(a) == len(b) == len(list((EXAMPLES / "scans").iterdir())) + 2
    for x, y in zip(a, b, strict=True):
        for key in ("path", "digit", "inverted", "status", "error"):
            assert x[key] == y[key], (key, x, y)
        for key in ["confidence"] + [f"p{d}" for d in range(10)]:
            # Batches are made up differently: float rounding differs, most on a photo read with low confidence.
            assert x[key] == pytest.approx(y[key], abs=1e-3), (x["path"], key)


def test_ray_reads_fields_as_the_local_engine_does(runner, tmp_path, local_ray):
    for src in sorted((EXAMPLES / "fields").glob("*_4.*")):
        shutil.copy(src, tmp_path / src.name)
    draw_digit().point(lambda v: 230).save(tmp_path / "zz_blank.png")
    args = ["run", str(tmp_path), "-q", "--format", "jsonl", "--probs", "--field", "--batch-size", "2"]
    local = runner.invoke(main, args)
    distributed = runner.invoke(main, [*args, "--engine", "ray", "--actors", "2"])
    assert local.exit_code == distributed.exit_code == 0, distributed.output
    a, b = jsonl(local.stdout), jsonl(distributed.stdout)
    assert len(a) == len(b) == 6
    assert b[-1]["status"] == "blank" and b[-1]["text"] is None
    for x, y in zip(a, b, strict=True):
        for key in ("path", "text", "inverted", "status"):
            assert x[key] == y[key], (key, x, y)
        assert [d["box"] for d in x.get("digits", [])] == [d["box"] for d in y.get("digits", [])]
        assert x["confidence"] == pytest.approx(y["confidence"], abs=1e-3)


def test_ray_summary_names_the_engine(runner, tmp_path, local_ray):
    draw_digit().save(tmp_path / "seven.png")
    result = runner.invoke(main, ["run", str(tmp_path), "--engine", "ray"])
    assert result.exit_code == 0 and "ray (local" in result.stderr


def test_without_ray_the_engine_is_one_line_naming_the_extra(runner, tmp_path, monkeypatch):
    draw_digit().save(tmp_path / "seven.png")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    result = runner.invoke(main, ["run", str(tmp_path), "--engine", "ray"])
    assert result.exit_code == 2
    assert "pip install 'digitscan[ray]'" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_archive_that_misbehaves_on_ray_is_one_line_too(runner, tmp_path, local_ray):
    class Eleven(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[0], 10 if x.shape[0] == 1 else 11)

    archive = tmp_path / "eleven.pt"
    torch.jit.script(Eleven()).save(str(archive))
    for k in range(3):
        draw_digit().save(tmp_path / f"{k}.png")
    result = runner.invoke(main, ["run", str(tmp_path), "--engine", "ray", "--weights", str(archive), "-q"])
    assert result.exit_code == 2 and "not 3 x 10 scores" in result.stderr
    assert result.stderr.count("\n") == 1
