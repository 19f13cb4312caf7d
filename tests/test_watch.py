"""`digitscan watch`: live reading from a video source, a line each time the reading changes, and the
window of --show under a virtual display (Xvfb)."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import FPS, SHAPES, SHOWN, draw_digit, write_clip
from PIL import Image

from digitscan import video
from digitscan.cli import main
from digitscan.dataset import BLANK, OK
from digitscan.model import default_weights, load_archive
from digitscan.watch import Changes, Latest, Seen, _read, open_source
from digitscan.window import BOX_COLOUR, WINDOW_SIDE, Window, annotate

CHANGES = [(digit, inverted) for inverted in (True, False) for digit in SHAPES.values()]
"""What the clip shows, in turn: each digit dark on paper, then light on a dark board."""


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("watch") / "clip.mp4"
    write_clip(path)
    return path


@pytest.fixture(scope="module")
def display():
    """A virtual X display (Xvfb, from the system's packages; .ci/run installs it): its DISPLAY value."""
    xvfb = shutil.which("Xvfb")
    assert xvfb, "the window tests need Xvfb (apt install xvfb)"
    server = subprocess.Popen([xvfb, "-displayfd", "1", "-nolisten", "tcp", "-screen", "0", "1024x768x24"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert server.stdout is not None
    number = server.stdout.readline().strip()
    yield f":{number}"
    server.terminate()
    server.wait()


def lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.mark.parametrize("steady", ["1", "3"])
def test_a_line_each_time_the_reading_changes(runner, clip, steady):
    """With --steady 1 any frame read wrong would be a line of its own: every frame is read right."""
    result = runner.invoke(main, ["watch", str(clip), "--steady", steady])
    assert result.exit_code == 0, result.output
    read = lines(result.stdout)
    assert [(r["digit"], r["inverted"]) for r in read] == CHANGES
    assert [r["time"] for r in read] == [k * SHOWN / FPS for k in range(len(CHANGES))]
    assert all(r["status"] == OK and r["confidence"] > 0.9 for r in read)


def test_a_video_over_http_is_read_whole(runner, clip):
    """A stream URL goes to FFmpeg; one with a duration (a file served over HTTP) is not live."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(clip.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{clip.name}"
        source = open_source(url)
        source.container.close()
        assert source.live is False
        result = runner.invoke(main, ["watch", url, "--steady", "1"])
    finally:
        server.shutdown()
    assert result.exit_code == 0, result.output
    assert [(r["digit"], r["inverted"]) for r in lines(result.stdout)] == CHANGES


def test_a_reading_is_printed_once_it_holds_for_steady_frames():
    changes = Changes(steady=3)

    def seen(t: float, digit: int | None) -> Seen:
        return Seen(t, digit, 0.9 if digit is not None else None, True, OK if digit is not None else BLANK)

    shown = [changes.see(seen(t, d)) for t, d in enumerate([7, 7, 3, 7, 7, 7, 7, 1, 1, None, None, None, 1])]
    printed = [(s.time, s.digit, s.status) for s in shown if s is not None]
    assert printed == [(3, 7, OK), (9, None, BLANK)]
    assert changes.see(seen(13, 1)) is None and changes.see(seen(14, 1)) == seen(12, 1)


def test_no_camera_no_file_and_no_extra_are_clear_errors(runner, clip, monkeypatch):
    camera = runner.invoke(main, ["watch", "57"])
    assert camera.exit_code == 2 and "no camera 57" in camera.stderr and not camera.stdout
    missing = runner.invoke(main, ["watch", "missing.mp4"])
    assert missing.exit_code == 2 and "missing.mp4: no such file" in missing.stderr
    not_video = clip.parent / "notes.mp4"
    not_video.write_text("not a video")
    broken = runner.invoke(main, ["watch", str(not_video)])
    assert broken.exit_code == 2 and "notes.mp4: not a readable video" in broken.stderr

    def no_av():
        raise video.VideoError(f"reading videos needs the video extra: {video.EXTRA}")

    monkeypatch.setattr(video, "load_av", no_av)
    for source in ("0", str(clip)):
        result = runner.invoke(main, ["watch", source])
        assert result.exit_code == 2 and 'pip install "digitscan[video]"' in result.stderr, source


def test_show_without_a_display_is_a_clear_error(runner, clip, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    result = runner.invoke(main, ["watch", str(clip), "--show"])
    assert result.exit_code == 2 and "--show needs a display" in result.stderr


def test_the_frame_is_drawn_with_the_digits_box_and_reading():
    frame = draw_digit(size=(160, 120), shape="seven").convert("RGB")
    seen = Seen(0.0, 7, 0.98, True, OK, box=(60, 30, 100, 90))
    drawn = annotate(frame, seen)
    assert drawn.size == (WINDOW_SIDE, WINDOW_SIDE * 120 // 160)
    scale = WINDOW_SIDE / 160
    green = [(x, y) for x in range(drawn.width) for y in range(0, drawn.height, 4)
             if drawn.getpixel((x, y)) == BOX_COLOUR]
    xs = {x for x, _ in green}
    assert min(xs) < 60 * scale < 100 * scale < max(xs), "the box is round the digit"
    assert annotate(frame, None).getpixel((5, 5)) == frame.resize(drawn.size).getpixel((5, 5))


def test_the_window_shows_frames_until_q(display, monkeypatch):
    monkeypatch.setenv("DISPLAY", display)
    frame = draw_digit(size=(160, 120), shape="one").convert("RGB")
    latest = Latest(frame, Seen(0.0, 1, 0.99, True, OK, box=(70, 20, 90, 100)))
    window = Window("test")
    shown: list[tuple[int, int]] = []

    def look_then_quit() -> None:
        shown.append((window.photo.width(), window.photo.height()))
        window.root.event_generate("<KeyPress-q>", when="tail")

    window.root.after(300, look_then_quit)
    done = threading.Event()
    timer = threading.Timer(10, done.set)  # should q be lost, the test ends (and fails) all the same
    timer.start()
    window.run(latest, done.is_set)
    timer.cancel()
    assert shown == [(WINDOW_SIDE, WINDOW_SIDE * 120 // 160)]
    assert window.closed and not done.is_set()


def test_show_reads_a_file_at_its_own_speed_and_ctrl_c_ends_it_cleanly(display, clip):
    env = dict(os.environ, DISPLAY=display)
    command = [sys.executable, "-m", "digitscan", "watch", str(clip), "--show"]
    whole = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert whole.returncode == 0, whole.stderr
    assert [(r["digit"], r["inverted"]) for r in lines(whole.stdout)] == CHANGES
    stopped = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert stopped.stdout is not None and stopped.stderr is not None
    first = json.loads(stopped.stdout.readline())
    stopped.send_signal(signal.SIGINT)
    out, err = stopped.communicate(timeout=60)
    assert stopped.returncode == 130 and "Traceback" not in err
    assert first["digit"] == CHANGES[0][0] and len(lines(out)) < len(CHANGES) - 1, "stopped before the end"


def test_a_frame_is_read_with_the_digits_box_in_its_pixels_and_an_empty_one_is_blank():
    model = load_archive(default_weights(), torch.device("cpu"))
    digit = draw_digit(size=(640, 480), box=(300, 150, 380, 330), shape="one").convert("RGB")
    empty = Image.new("RGB", (640, 480), (235, 233, 228))
    one, blank = _read([(0.5, digit), (0.6, empty)], model, default_weights(), torch.device("cpu"), "auto")
    assert (one.time, one.digit, one.status, one.inverted) == (0.5, 1, OK, True)
    left, top, right, bottom = one.box
    assert 320 <= left <= 340 <= right <= 360 and abs(top - 150) <= 8 and abs(bottom - 330) <= 8
    assert (blank.time, blank.digit, blank.status) == (0.6, None, BLANK)
