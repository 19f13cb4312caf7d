"""`torchrun -m digitscan fit`: two CPU processes with gloo train one model; only rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch


def test_torchrun_two_cpu_processes_write_one_loadable_archive(mnist_root, tmp_path):
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "digitscan", "fit", "--scratch", "--device", "cpu", "--limit", "1024", "--epochs", "1",
         "--calibrate", "200", "--batch-size", "64", "--data", str(mnist_root), "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    card = json.loads(out.with_suffix(".json").read_text())
    assert "2 processes (torchrun)" in card["trained_on"] and card["train_images"] == 1024
    assert done.stderr.count("epoch 1:") == 1  # one rank logs
    model = torch.jit.load(str(out))
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert float(model.temperature) == pytest.approx(card["calibration"]["temperature"], abs=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.ckpt", "ddp.json", "ddp.pt"]
