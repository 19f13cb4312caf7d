"""The GPU pipeline (JPEG bytes decoded and prepared on the model's device), run on the CPU."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from conftest import draw_digit
from PIL import Image

from digitscan import ondevice
from digitscan.cli import main
from digitscan.dataset import ScanDataset
from digitscan.decode import plain_jpeg_bytes
from digitscan.scorer import Scorer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("flags", [[], ["--gpu-decode"]])
def test_only_gpu_decode_hands_jpegs_to_the_device(runner, monkeypatch, tmp_path, flags):
    digit = draw_digit(size=(200, 180)).convert("RGB")
    digit.save(tmp_path / "a.jpg")
    digit.save(tmp_path / "b.png")
    handed = []
    real = ondevice.prepare_on_device
    monkeypatch.setattr("digitscan.scorer.prepare_on_device",
                        lambda encoded, *args: handed.extend(encoded) or real(encoded, *args))
    result = runner.invoke(main, ["run", str(tmp_path), "--device", "cpu", "--workers", "0", "-q", *flags])
    assert result.exit_code == 0, result.output
    assert [row.split(",")[1] for row in result.stdout.splitlines()[1:]] == ["7", "7"]
    assert len(handed) == (1 if flags else 0)


def test_the_device_path_reads_the_examples_as_well_as_the_loader_workers(monkeypatch):
    with open(EXAMPLES / "labels.csv", newline="") as f:
        truth = {str(EXAMPLES / row["path"]): int(row["digit"]) for row in csv.DictReader(f)}
    paths = sorted(truth)
    handed = []
    real = ondevice.prepare_on_device
    monkeypatch.setattr("digitscan.scorer.prepare_on_device",
                        lambda encoded, *args: handed.extend(encoded) or real(encoded, *args))
    on_device = [r for batch in Scorer(device="cpu", workers=0, decode_on_device=True).score(paths) for r in batch]
    in_workers = [r for batch in Scorer(device="cpu", workers=0).score(paths) for r in batch]
    jpegs = [p for p in paths if p.endswith(".jpg")]
    assert len(handed) == len(jpegs) >= 10  # every example JPEG is plain: all went to the device
    assert [r.path for r in on_device] == paths
    right = [sum(r.digit == truth[r.path] for r in results) for results in (on_device, in_workers)]
    assert right[0] >= right[1] - 2  # full-size decoding and box filters, not DCT scaling: near, not equal
    same = sum(a.digit == b.digit for a, b in zip(on_device, in_workers, strict=True) if a.path in jpegs)
    assert same >= 0.9 * len(jpegs)
    # The other files are read alike; only the batches they share differ, which moves the last bits.
    others = [(a, b) for a, b in zip(on_device, in_workers, strict=True) if a.path not in jpegs]
    assert others and all((a.digit, a.inverted, a.status) == (b.digit, b.inverted, b.status) for a, b in others)
    assert all(abs(a.confidence - b.confidence) < 1e-5 for a, b in others if a.confidence is not None)


def test_a_damaged_jpeg_among_those_handed_over_costs_its_own_row(tmp_path):
    digit = draw_digit(size=(200, 180)).convert("RGB")
    buf = io.BytesIO()
    digit.save(buf, "JPEG")
    (tmp_path / "a_good.jpg").write_bytes(buf.getvalue())
    (tmp_path / "b_cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    digit.save(tmp_path / "c_good.png")
    paths = sorted(str(p) for p in tmp_path.iterdir())
    assert plain_jpeg_bytes(paths[1]) is not None  # its header is whole: it is handed over
    results = [r for batch in Scorer(device="cpu", workers=0, decode_on_device=True).score(paths) for r in batch]
    assert [(r.status, r.digit) for r in results] == [("ok", 7), ("error", None), ("ok", 7)]
    assert "truncated" in results[1].error


@pytest.mark.parametrize("kind", ["turned", "progressive", "png"])
def test_files_a_device_decoder_cannot_take_whole_stay_with_the_workers(tmp_path, kind):
    digit = draw_digit(size=(200, 180))
    path = tmp_path / ("scan.png" if kind == "png" else "scan.jpg")
    if kind == "turned":
        exif = Image.Exif()
        exif[0x0112] = 6
        digit.convert("RGB").save(path, exif=exif.tobytes())
    else:
        digit.convert("RGB").save(path, progressive=kind == "progressive")
    assert plain_jpeg_bytes(path) is None
    item = ScanDataset([str(path)], hand_over=True)[0]
    assert item.encoded is None and item.status == "ok" and item.pixels is not None
