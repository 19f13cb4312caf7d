"""DigitNet against the seeds' network: size, inference speed, and seconds per training epoch.

    python bench/model.py --data ../shared/mnist

Inference is timed on the loaded archives as `digitscan run` uses them (frozen and, on the CPU,
optimised for inference); the seeds' network gets the same treatment. The epoch is one full pass
of `digitscan fit --scratch` over the 55,000 training images (augmentation included).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from digitscan.fit import FitConfig, fit
from digitscan.model import load_archive, quiet_jit


class SeedNet(nn.Module):
    """The seed tutorials' network: two conv layers and a 500-unit dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.fc1 = nn.Linear(1600, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def images_per_second(model: torch.jit.ScriptModule, batch: int, threads: int, seconds: float = 2.0) -> float:
    torch.set_num_threads(threads)
    x = torch.randn(batch, 1, 28, 28)
    with torch.inference_mode():
        for _ in range(5):
            model(x)
        count, tick = 0, time.perf_counter()
        while time.perf_counter() - tick < seconds:
            model(x)
            count += batch
    return count / (time.perf_counter() - tick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/mnist")
    parser.add_argument("--skip-epoch", action="store_true", help="only the inference figures")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    with quiet_jit():
        seed = torch.jit.optimize_for_inference(torch.jit.script(SeedNet().eval()))
    ours = load_archive()
    params = {"seeds' network": sum(p.numel() for p in SeedNet().parameters()),
              "DigitNet": sum(p.numel() for p in load_archive(freeze=False).parameters())}
    print(f"{'images/s':22s} {'batch 1, 1 thread':>18s} {'batch 256, 1 thread':>20s} "
          f"{f'batch 256, {threads} threads':>22s} {'parameters':>11s}")
    for name, model in [("seeds' network", seed), ("DigitNet", ours)]:
        print(f"{name:22s} {images_per_second(model, 1, 1):18,.0f} {images_per_second(model, 256, 1):20,.0f} "
              f"{images_per_second(model, 256, threads):22,.0f} {params[name]:11,d}", flush=True)
    torch.set_num_threads(threads)
    if args.skip_epoch:
        return
    with tempfile.TemporaryDirectory() as out:
        cfg = FitConfig(data=Path(args.data), out=Path(out) / "epoch.pt", epochs=1, scratch=True)
        result = fit(cfg, log=lambda line: print(line, file=sys.stderr))
    print(f"one training epoch (55,000 images, batch 128, augmentation): {result.history[0]['seconds']:.1f} s "
          f"on {threads} threads")


if __name__ == "__main__":
    main()
