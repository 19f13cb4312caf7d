"""A hostile world: special files, link loops, outputs that name inputs or devices, failures mid-run,
signals, a closed stdout and misbehaving archives. Each ends in a clear message, with the rows done
kept and nothing else touched."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EXAMPLES, draw_digit
from PIL import Image

from digitscan import writers
from digitscan.cli import main
from digitscan.scorer import Scorer

RUN = [sys.executable, "-m", "digitscan", "run"]


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.fixture()
def scans(tmp_path: Path) -> Path:
    folder = tmp_path / "scans"
    folder.mkdir()
    for k in range(6):
        draw_digit().save(folder / f"{k}.png")
    return folder


def test_a_named_pipe_among_the_scans_gets_an_error_row_instead_of_a_hang(scans):
    os.mkfifo(scans / "pipe.png")
    done = subprocess.run([*RUN, str(scans), "-q", "--workers", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    got = {Path(r["path"]).name: r for r in rows(done.stdout)}
    assert len(got) == 7 and got["pipe.png"]["status"] == "error" and "named pipe" in got["pipe.png"]["error"]


def test_link_loops_and_links_to_an_ancestor_give_rows_not_a_traceback(runner, scans):
    (scans / "loop.png").symlink_to(scans / "loop.png")
    (scans / "sub").mkdir()
    draw_digit().save(scans / "sub" / "deep.png")
    (scans / "sub" / "back_up").symlink_to(scans)
    result = runner.invoke(main, ["run", str(scans), "-r", "-q", "--workers", "0"])
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    got = {Path(r["path"]).name: r for r in rows(result.stdout)}
    assert len(got) == 8  # six scans, the loop, deep.png: each folder walked once
    assert got["loop.png"]["error"] == "symbolic link loop" and got["deep.png"]["status"] == "ok"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_an_output_that_names_an_input_is_refused_and_left_alone(runner, scans, suffix):
    image = scans / f"0{suffix}"
    os.replace(scans / "0.png", image)  # `-o *.png`: the first image lands after -o
    before = image.read_bytes()
    result = runner.invoke(main, ["run", str(image), str(scans / "1.png"), "-o", str(image)])
    assert result.exit_code == 2 and "one of the inputs" in result.stderr
    assert image.read_bytes() == before


def test_a_pipe_or_device_output_is_written_into_and_a_linked_output_through(runner, scans, tmp_path):
    pipe = tmp_path / "results.pipe"
    os.mkfifo(pipe)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_text()))
    reader.start()
    result = runner.invoke(main, ["run", str(scans), "-q", "-o", str(pipe)])
    reader.join(timeout=60)
    assert result.exit_code == 0 and stat.S_ISFIFO(os.stat(pipe).st_mode) and len(rows(received[0])) == 6
    assert not Path(str(pipe) + writers.SETTINGS_SUFFIX).exists()
    if os.geteuid() == 0:  # only root may make a device: a null device of our own, never the system's
        null = tmp_path / "null"
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        assert runner.invoke(main, ["run", str(scans), "-q", "-o", str(null)]).exit_code == 0
        assert null.is_char_device()

    real, link = tmp_path / "real.csv", tmp_path / "link.csv"
    real.write_text("old\n")
    link.symlink_to(real)
    assert runner.invoke(main, ["run", str(scans), "-q", "-o", str(link)]).exit_code == 0
    assert link.is_symlink() and len(rows(real.read_text())) == 6


def test_a_failure_mid_run_leaves_the_target_as_it_was_and_the_rows_in_a_partial_file(runner, scans, tmp_path,
                                                                                       monkeypatch):
    out = tmp_path / "r.csv"
    out.write_text("the previous results\n")
    real = Scorer._results
    calls = []

    def fail_on_the_second_batch(self, batch, sources):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(self, batch, sources)

    monkeypatch.setattr(Scorer, "_results", fail_on_the_second_batch)
    result = runner.invoke(main, ["run", str(scans), "-o", str(out), "--batch-size", "2", "--workers", "0"])
    assert result.exit_code == 3 and "No space left on device" in result.stderr
    assert out.read_text() == "the previous results\n"
    partial = tmp_path / "r.csv.partial"
    assert len(rows(partial.read_text())) == 2 and str(partial) in result.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_sigterm_keeps_the_rows_done_as_ctrl_c_does(runner, scans, tmp_path, monkeypatch):
    real = writers.Writer.write
    calls = []

    def write_then_terminate(self, batch):
        real(self, batch)
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(writers.Writer, "write", write_then_terminate)
    out = tmp_path / "r.csv"
    result = runner.invoke(main, ["run", str(scans), "-o", str(out), "--batch-size", "2", "--workers", "0"])
    assert result.exit_code == 130 and len(rows(out.read_text())) == 2
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is put back


def test_a_reader_that_goes_away_ends_the_run_quietly():
    proc = subprocess.Popen([*RUN, str(EXAMPLES / "scans"), "--workers", "0", "--batch-size", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().startswith("path,")
    proc.stdout.close()  # as `| head -1` does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and "Traceback" not in err and "Exception ignored" not in err


class _Misbehaving(torch.nn.Module):
    """Passes the one-image check at load time, then returns `how` for real batches."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n == 1:
            return torch.zeros(1, 10)
        if self.how == "eleven":
            return torch.zeros(n, 11)
        return torch.full((n, 10), float("nan"))


@pytest.mark.parametrize(("how", "says"), [("eleven", "not 2 x 10 scores"), ("nan", "NaN")])
def test_an_archive_that_misbehaves_on_a_real_batch_is_a_setup_error_not_a_row(runner, scans, tmp_path, how, says):
    archive = tmp_path / f"{how}.pt"
    torch.jit.script(_Misbehaving(how)).save(str(archive))
    out = tmp_path / "r.json"
    result = runner.invoke(main, ["run", str(scans / "0.png"), str(scans / "1.png"), "--weights", str(archive),
                                  "-o", str(out), "--workers", "0"])
    assert result.exit_code == 2 and says in result.stderr and result.stderr.count("\n") <= 2
    assert not out.exists()


@pytest.mark.parametrize("content", [b"name,age\nann,3\n", bytes(range(256)) * 4])
def test_resume_appends_only_to_digitscans_own_output(runner, scans, tmp_path, content):
    out = tmp_path / "theirs.csv"
    out.write_bytes(content)
    result = runner.invoke(main, ["run", str(scans), "-o", str(out), "--resume"])
    assert result.exit_code == 2 and "not a digitscan results file" in result.stderr
    assert out.read_bytes() == content


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_a_file_name_that_is_not_utf8_is_read_written_and_resumed(runner, scans, tmp_path, fmt):
    draw_digit().save(os.path.join(os.fsencode(scans), b"caf\xe9.png"))  # Latin-1, as old scanners name files
    name = os.fsdecode(os.path.join(os.fsencode(scans), b"caf\xe9.png"))
    out = tmp_path / f"r.{fmt}"
    result = runner.invoke(main, ["run", str(scans), "-q", "-o", str(out)])
    assert result.exit_code == 0, result.output
    if fmt == "csv":
        with open(out, encoding="utf-8", errors="surrogateescape", newline="") as f:
            paths = [r["path"] for r in csv.DictReader(f)]
    elif fmt == "json":
        paths = [r["path"] for r in json.loads(out.read_text(encoding="utf-8"))]
    else:
        paths = [json.loads(line)["path"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert name in paths and len(paths) == 7
    if fmt != "json":
        again = runner.invoke(main, ["run", str(scans), "-q", "-o", str(out), "--resume"])
        assert again.exit_code == 0  # nothing left to score: the name was found in the file
        assert out.read_bytes().count(b"caf\xe9" if fmt == "csv" else b"caf\\udce9") == 1


def test_a_file_name_that_is_not_utf8_reaches_standard_output(scans):
    draw_digit().save(os.path.join(os.fsencode(scans), b"caf\xe9.png"))
    done = subprocess.run([*RUN, str(scans), "-q", "--workers", "0"], capture_output=True, timeout=120)
    assert done.returncode == 0 and b"caf\xe9.png" in done.stdout


@pytest.mark.parametrize("mode", ["L", "I;16"])
def test_a_thin_or_deep_image_is_reduced_so_its_cost_is_bounded(tmp_path, mode):
    from digitscan.decode import COARSE_SIDE, MAX_SIDE, load_grey

    thin = tmp_path / "thin.png"
    Image.new(mode, (4_000_000, 1)).save(thin)  # a few KB on disk
    assert max(load_grey(str(thin), COARSE_SIDE).shape) <= MAX_SIDE
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((3000, 2000), 40000, dtype=np.uint16)).save(deep)
    grey = load_grey(str(deep), COARSE_SIDE)
    assert min(grey.shape) < 2 * COARSE_SIDE and grey.dtype == np.float32


def test_a_closed_stdin_or_a_full_stdout_is_one_line_not_a_traceback(scans):
    closed = subprocess.run(["sh", "-c", f'"{sys.executable}" -m digitscan run - <&-'], capture_output=True,
                            text=True, timeout=120)
    assert closed.returncode == 2 and closed.stderr == "digitscan: -: standard input is closed\n"
    closed = subprocess.run(["sh", "-c", f'"{sys.executable}" -m digitscan run "{scans}" >&-'], capture_output=True,
                            text=True, timeout=120)
    assert closed.returncode == 2 and "standard output is closed" in closed.stderr and closed.stderr.count("\n") == 1
    with open("/dev/full", "w") as full:  # every write to it fails with ENOSPC; it is never replaced
        done = subprocess.run([*RUN, str(scans), "-q", "--workers", "0"], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "standard output: cannot write results (No space left on device)" in done.stderr


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.add(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_sigterm_to_a_real_run_with_workers_keeps_the_rows_and_leaves_nothing_behind(tmp_path):
    scans = tmp_path / "many"
    scans.mkdir()
    seven = draw_digit()
    for k in range(600):
        seven.save(scans / f"{k:04d}.png")
    out = tmp_path / "r.jsonl"
    proc = subprocess.Popen([*RUN, str(scans), "-q", "--workers", "2", "--batch-size", "16", "-o", str(out)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.exists() and out.read_text().count("\n") >= 16):
        time.sleep(0.05)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and "results kept" in err
    lines = out.read_text().splitlines()
    assert 16 <= len(lines) < 600 and all(json.loads(line)["status"] == "ok" for line in lines)
    time.sleep(1)
    assert workers and not [pid for pid in workers if _alive(pid)]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".partial"))]


def test_a_file_that_decodes_for_too_long_gets_an_error_row_and_the_run_goes_on(runner, scans, monkeypatch):
    from digitscan import decode

    real = decode.Image.open

    def slow_for_one(file, *args, **kwargs):
        if "3.png" in str(getattr(file, "name", file)):
            while True:  # like PIL working through thousands of progressive scans, chunk after chunk
                time.sleep(0.01)
        return real(file, *args, **kwargs)

    monkeypatch.setattr(decode, "MAX_DECODE_SECONDS", 0.5)
    monkeypatch.setattr(decode.Image, "open", slow_for_one)
    result = runner.invoke(main, ["run", str(scans), "--workers", "0", "-q"])
    got = {Path(r["path"]).name: r for r in rows(result.stdout)}
    assert result.exit_code == 1 and len(got) == 6
    assert got["3.png"]["status"] == "error" and "took over 0.5 s to decode" in got["3.png"]["error"]
    assert all(r["status"] == "ok" for name, r in got.items() if name != "3.png")
