"""Video files as inputs to `run`: each sampled frame is a row, read like a photo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FPS, draw_digit, write_clip

from digitscan import video
from digitscan.cli import main


@pytest.fixture(scope="module")
def mp4(tmp_path_factory) -> tuple[Path, list[int]]:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    return path, write_clip(path)


def rows(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_every_frame_of_a_video_is_a_row_read_like_a_photo(runner, mp4):
    path, shown = mp4
    read = rows(runner.invoke(main, ["run", str(path), "--format", "jsonl", "-q"]))
    assert [r["path"] for r in read] == [f"{path}#t={k / FPS:.3f}" for k in range(len(shown))]
    assert [r["digit"] for r in read] == shown
    assert [r["inverted"] for r in read] == [True] * (len(shown) // 2) + [False] * (len(shown) // 2)


def test_every_and_fps_choose_the_frames(runner, mp4):
    path, shown = mp4
    every = rows(runner.invoke(main, ["run", str(path), "--every", "4", "--format", "jsonl", "-q"]))
    assert [r["path"].rpartition("#t=")[2] for r in every] == [f"{k / FPS:.3f}" for k in range(0, len(shown), 4)]
    assert [r["digit"] for r in every] == shown[::4]
    twice = rows(runner.invoke(main, ["run", str(path), "--fps", "2", "--format", "jsonl", "-q"]))
    assert [float(r["path"].rpartition("#t=")[2]) for r in twice] == [k / 2 for k in range(len(shown) // 5)]
    assert [r["digit"] for r in twice] == shown[::5]
    both = runner.invoke(main, ["run", str(path), "--every", "2", "--fps", "2"])
    assert both.exit_code == 2 and "give one" in both.stderr


def test_a_folder_holds_videos_beside_images_and_a_broken_video_gets_an_error_row(runner, tmp_path):
    shown = write_clip(tmp_path / "clip.avi")
    draw_digit(shape="one").save(tmp_path / "image.png")
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video at all")
    result = runner.invoke(main, ["run", str(tmp_path), "--every", "10", "--format", "jsonl", "-q"])
    assert result.exit_code == 1
    read = [json.loads(line) for line in result.stdout.splitlines()]
    broken, *frames, image = read
    assert broken["path"].endswith("broken.mp4") and broken["status"] == "error"
    assert "video" in broken["error"]
    assert [r["digit"] for r in frames] == shown[::10]
    assert image["path"].endswith("image.png") and image["digit"] == 1


def test_without_the_extra_a_video_gets_an_error_row_naming_it(runner, mp4, monkeypatch):
    path, _ = mp4

    def no_av():
        raise video.VideoError(f"reading videos needs the video extra: {video.EXTRA}")

    monkeypatch.setattr(video, "load_av", no_av)
    result = runner.invoke(main, ["run", str(path), "--format", "jsonl", "-q"])
    assert result.exit_code == 1
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["status"] == "error" and 'pip install "digitscan[video]"' in row["error"]


def test_resume_keeps_the_frames_done_and_refuses_other_sampling(runner, mp4, tmp_path):
    path, shown = mp4
    out = tmp_path / "out.jsonl"
    assert runner.invoke(main, ["run", str(path), "--every", "3", "--out", str(out), "-q"]).exit_code == 0
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:5]) + "\n")
    again = runner.invoke(main, ["run", str(path), "--every", "3", "--out", str(out), "--resume", "-q"])
    assert again.exit_code == 0 and out.read_text().splitlines() == lines
    other = runner.invoke(main, ["run", str(path), "--every", "2", "--out", str(out), "--resume", "-q"])
    assert other.exit_code == 2 and "--every/--fps" in other.stderr
