"""Speed of `digitscan run` against the seeds' one-image-at-a-time loop, whole processes, same inputs.

    python bench/speed.py                      # 20,000 small scans, 40 large photos, 100,000-file memory run
    python bench/speed.py --small 2000 --large 10 --memory-files 0   # a quick look
    python bench/speed.py --gpu-small 200000 --gpu-large 2000        # CPU against GPU, where there is one

Builds its inputs under bench/out/, then prints images per second for each way of scoring, their
ratio, the decode-only floor, start-up time and peak memory (largest process, workers included).
The steady state (start-up excluded) is the rate from the first batch's results to the last, in one
process scoring the small scans as `run` does; its floor is the cost per image of decode + preprocess
+ model on one core, times the cores. Large photos are compared with libjpeg-turbo's own cost to
decode them at 1/8 scale.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"

SEED_LOOP = r'''
"""The seed tutorials' inference loop: open, plain 28x28 resize, one forward pass of batch 1."""
import sys
from pathlib import Path
import torch
from torch import nn
from PIL import Image
from torchvision import transforms

class Net(nn.Module):  # the seeds' network: two conv layers and a 500-unit dense layer
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.fc1 = nn.Linear(1600, 500)
        self.fc2 = nn.Linear(500, 10)
    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))

model = Net().eval()
transform = transforms.Compose([transforms.Resize((28, 28)), transforms.ToTensor(),
                                transforms.Normalize((0.1307,), (0.3081,))])
with open(sys.argv[2], "w") as out:
    for path in sorted(Path(sys.argv[1]).iterdir()):
        image = Image.open(path).convert("L")
        with torch.no_grad():
            digit = model(transform(image).unsqueeze(0)).argmax(1).item()
        out.write(f"{path},{digit}\n")
'''

MAXRSS = "import resource,subprocess,sys;subprocess.run(sys.argv[1:],check=True);" \
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"


def make_inputs(folder: Path, count: int, size: tuple[int, int], quality: int, seed: int,
                unique: int | None = None) -> Path:
    """`count` JPEG scans of a dark digit-like stroke on light paper, each `size` (w, h), drawn on all
    cores; with `unique`, only that many are drawn and the rest are hard links to them (the same bytes
    to decode, without minutes of drawing)."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.iterdir())) == count:
        return folder
    drawn = min(count, unique or count)
    chunks = [(folder, range(k, min(k + 500, drawn)), size, quality, seed) for k in range(0, drawn, 500)]
    with ProcessPoolExecutor() as pool:
        list(pool.map(_draw, chunks))
    for k in range(drawn, count):
        os.link(folder / f"{k % drawn:06d}.jpg", folder / f"{k:06d}.jpg")
    return folder


def _draw(job: tuple[Path, range, tuple[int, int], int, int]) -> None:
    """Draw the scans numbered in `job`'s range, each from its own seed."""
    from digitscan.synth import compose, ink_alpha, place

    folder, numbers, (w, h), quality, seed = job
    for k in numbers:
        rng = np.random.default_rng([seed, k])
        yy, xx = np.mgrid[0:28, 0:28]
        ring = np.abs(np.hypot(yy - 14, (xx - 14) * rng.uniform(0.6, 1.4)) - rng.uniform(5, 9)) < 1.6
        digit = (ring * 255).astype(np.uint8)
        alpha = place(ink_alpha(digit, int(h * 0.6), rng), (h, w), rng)
        compose(alpha, (235, 230, 215), (30, 30, 40), rng, light=0.2, noise=4).save(folder / f"{k:06d}.jpg",
                                                                                      quality=quality)


def timed(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak resident memory (MiB, largest process) of a command."""
    tick = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", MAXRSS, *cmd], check=True, capture_output=True, text=True)
    return time.perf_counter() - tick, int(out.stdout.split()[-1]) // 1024


def decode_floor(folder: Path, limit: int = 3000) -> tuple[float, float]:
    """Images per second per core for reading and decoding alone, to grey at the scale digitscan first
    looks at: with libjpeg-turbo (simplejpeg, the fastest decoder digitscan uses), and with Pillow."""
    import simplejpeg

    from digitscan.decode import COARSE_SIDE

    paths = sorted(folder.iterdir())[:limit]
    tick = time.perf_counter()
    for p in paths:
        simplejpeg.decode_jpeg(p.read_bytes(), colorspace="GRAY", min_height=COARSE_SIDE, min_width=COARSE_SIDE)
    turbo = len(paths) / (time.perf_counter() - tick)
    tick = time.perf_counter()
    for p in paths:
        with Image.open(p) as im:
            im.draft("L", (COARSE_SIDE, COARSE_SIDE))
            im.convert("L").load()
    return turbo, len(paths) / (time.perf_counter() - tick)


def stage_costs(folder: Path, count: int = 2048, batch: int = 256) -> dict[str, float]:
    """Microseconds per image, on one core, for each stage of `digitscan run`: decode, preprocess, model."""
    import torch

    from digitscan.allocator import keep_freed_memory
    from digitscan.decode import COARSE_SIDE, load_grey
    from digitscan.model import load_archive
    from digitscan.preprocess import prepare_batch

    keep_freed_memory()  # as `digitscan run` and its loader workers do
    torch.set_num_threads(1)
    paths = sorted(folder.iterdir())[:count]
    model = load_archive()
    tick = time.perf_counter()
    greys = [load_grey(p, COARSE_SIDE) for p in paths]
    decode = time.perf_counter() - tick
    tick = time.perf_counter()
    pixels = torch.cat([prepare_batch(greys[i:i + batch]).pixels for i in range(0, len(greys), batch)])
    prep = time.perf_counter() - tick
    with torch.inference_mode():
        tick = time.perf_counter()
        for i in range(0, len(pixels), batch):
            model(pixels[i:i + batch].unsqueeze(1))
        infer = time.perf_counter() - tick
    return {name: seconds / len(paths) * 1e6 for name, seconds in
            (("decode", decode), ("preprocess", prep), ("model", infer))}


def libjpeg_eighth(folder: Path) -> float:
    """Seconds per photo for libjpeg-turbo alone to read and decode it at 1/8 scale, to grey: the floor."""
    import simplejpeg

    paths = sorted(folder.iterdir())
    for p in paths:  # into the page cache, as for the other timings
        p.read_bytes()
    tick = time.perf_counter()
    for p in paths:
        data = p.read_bytes()
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        simplejpeg.decode_jpeg(data, colorspace="GRAY", min_factor=8, min_height=-(-height // 8),
                               min_width=-(-width // 8))
    return (time.perf_counter() - tick) / len(paths)


def steady_state(folder: Path) -> float:
    """Images per second from the first batch's results to the last (start-up and the workers' first
    batch excluded), scoring as `digitscan run` does with its default workers."""
    from digitscan.scorer import Scorer

    batches = Scorer().score(sorted(str(p) for p in folder.iterdir()))
    next(batches)
    tick = time.perf_counter()
    count = sum(len(batch) for batch in batches)
    return count / (time.perf_counter() - tick)


def large_photo_check(folder: Path) -> tuple[float, float, float, int, int]:
    """Seconds per photo for digitscan's decoding alone, for draft decoding + preprocessing and for full
    decoding + preprocessing, and how many predictions of the last two agree."""
    import torch

    from digitscan.decode import COARSE_SIDE, load_grey
    from digitscan.model import load_archive
    from digitscan.preprocess import prepare

    model = load_archive()
    paths = sorted(folder.iterdir())

    def score(load) -> tuple[float, list[int]]:
        tick = time.perf_counter()
        pixels = [prepare(load(p)).pixels for p in paths]
        seconds = (time.perf_counter() - tick) / len(paths)
        with torch.inference_mode():
            digits = model(torch.from_numpy(np.stack(pixels)).unsqueeze(1)).argmax(1).tolist()
        return seconds, digits

    tick = time.perf_counter()
    for p in paths:
        load_grey(p, COARSE_SIDE)
    decode_s = (time.perf_counter() - tick) / len(paths)
    draft_s, draft_digits = score(load_grey)
    full_s, full_digits = score(lambda p: load_grey(Image.open(p)))  # opened first: no draft mode
    same = sum(a == b for a, b in zip(draft_digits, full_digits, strict=True))
    return decode_s, draft_s, full_s, same, len(paths)


def gpu_figures(digitscan: str, small: int, large: int) -> None:
    """Images per second, start-up included, with the model on the CPU, on the GPU, and on the GPU with
    `--gpu-decode` (nvJPEG decoding and preprocessing on the GPU), when there is a GPU."""
    import torch

    if not torch.cuda.is_available():
        print("CPU against GPU: no CUDA GPU here")
        return
    print(f"CPU against GPU ({torch.cuda.get_device_name(0)}), whole process, start-up included:")
    for count, size, seed, unique in ((small, (110, 120), 3, 20_000), (large, (3000, 4000), 4, 200)):
        if not count:
            continue
        folder = make_inputs(OUT / f"gpu_{count}_{size[0]}", count, size, 90, seed=seed, unique=unique)
        for flags in (["--device", "cpu"], ["--device", "cuda"], ["--device", "cuda", "--gpu-decode"]):
            seconds, _ = timed([digitscan, "run", str(folder), "--quiet", *flags, "--out", str(OUT / "gpu.csv")])
            print(f"  {count:,} of {size[0]} x {size[1]}, {' '.join(flags):27s} {seconds:8.2f} s  "
                  f"{count / seconds:9,.0f} images/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=20_000, help="small scans (about 110 x 120 px)")
    parser.add_argument("--large", type=int, default=40, help="large photos (3000 x 4000 px)")
    parser.add_argument("--memory-files", type=int, default=100_000, help="files for the memory run (0: skip)")
    parser.add_argument("--gpu-small", type=int, default=200_000, help="small scans for CPU against GPU (0: skip)")
    parser.add_argument("--gpu-large", type=int, default=2_000, help="large photos for CPU against GPU (0: skip)")
    args = parser.parse_args()
    digitscan = str(Path(sys.executable).with_name("digitscan"))
    cores = len(os.sched_getaffinity(0))
    print(f"machine: {cores} cores; python {sys.version.split()[0]}")

    small = make_inputs(OUT / f"small_{args.small}", args.small, (110, 120), 90, seed=1)
    large = make_inputs(OUT / f"large_{args.large}", args.large, (3000, 4000), 90, seed=2)
    (OUT / "seed_loop.py").write_text(SEED_LOOP)

    help_s, _ = timed([digitscan, "--help"])
    one = sorted(small.iterdir())[0]
    start_s, _ = timed([digitscan, "run", str(one), "--quiet", "--out", str(OUT / "one.csv")])
    print(f"start-up: 'digitscan --help' {help_s:.2f} s; 'digitscan run' on one image {start_s:.2f} s")

    turbo, pillow = decode_floor(small)
    print(f"decode-only floor (small JPEG, read + decode to grey): libjpeg-turbo {turbo:,.0f} images/s per core, "
          f"{turbo * cores:,.0f} on {cores} (Pillow {pillow:,.0f} per core)")

    stages = stage_costs(small)
    print("where the time goes, per image on one core: " +
          ", ".join(f"{name} {us:.0f} us" for name, us in stages.items()))
    floor = cores * 1e6 / sum(stages.values())

    seed_s, seed_mb = timed([sys.executable, str(OUT / "seed_loop.py"), str(small), str(OUT / "seed.csv")])
    ours_s, ours_mb = timed([digitscan, "run", str(small), "--quiet", "--out", str(OUT / "ours.csv")])
    n = args.small
    print(f"{n:,} small scans, whole process, start-up included:")
    print(f"  seeds' loop     {seed_s:7.2f} s  {n / seed_s:8,.0f} images/s  peak {seed_mb} MiB")
    print(f"  digitscan run   {ours_s:7.2f} s  {n / ours_s:8,.0f} images/s  peak {ours_mb} MiB")
    print(f"  speed-up        {seed_s / ours_s:7.1f}x")
    steady = steady_state(small)
    print(f"  steady state    {steady:8,.0f} images/s (start-up excluded), {steady / floor:.0%} of the floor: "
          f"{floor:,.0f} images/s for decode + preprocess + model on {cores} cores")

    decode_s, draft_s, full_s, same, total = large_photo_check(large)
    eighth_s = libjpeg_eighth(large)
    big_s, _ = timed([digitscan, "run", str(large), "--quiet", "--out", str(OUT / "large.csv")])
    print(f"{total} large photos (3000 x 4000 JPEG), per image in one process:")
    print(f"  libjpeg 1/8     {eighth_s * 1000:7.1f} ms   read + entropy-decode at 1/8 scale: the floor")
    print(f"  decode          {decode_s * 1000:7.1f} ms   digitscan's first look, {decode_s / eighth_s:.2f}x the floor")
    print(f"  draft decode    {draft_s * 1000:7.1f} ms   and preprocessing")
    print(f"  full decode     {full_s * 1000:7.1f} ms   draft is {full_s / draft_s:.1f}x faster; "
          f"same prediction on {same}/{total}")
    print(f"  digitscan run   {big_s:7.2f} s for {total} ({total / big_s:.1f} images/s, start-up included)")

    if args.gpu_small or args.gpu_large:
        gpu_figures(digitscan, args.gpu_small, args.gpu_large)

    if args.memory_files:
        many = OUT / f"many_{args.memory_files}"
        if not many.exists():
            many.mkdir()
            sources = sorted(small.iterdir())
            for k in range(args.memory_files):
                os.link(sources[k % len(sources)], many / f"{k:07d}.jpg")
        many_s, many_mb = timed([digitscan, "run", str(many), "--quiet", "--format", "jsonl",
                                 "--out", str(OUT / "many.jsonl")])
        print(f"{args.memory_files:,} files: {many_s:.1f} s ({args.memory_files / many_s:,.0f} images/s), "
              f"peak resident memory {many_mb} MiB (largest process)")


if __name__ == "__main__":
    main()
