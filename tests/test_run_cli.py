"""`digitscan run` as a user meets it: formats, stdin, quoting, streams, exit statuses."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, draw_digit

from digitscan.cli import main
from digitscan.cli import run as run_command
from digitscan.model import default_weights
from digitscan.writers import COLUMNS, PROB_COLUMNS


@pytest.fixture()
def scans(tmp_path: Path) -> Path:
    """Five example scans, one blank page and one file that is not an image."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for src in sorted((EXAMPLES / "scans").iterdir())[:5]:
        shutil.copy(src, folder / src.name)
    draw_digit().point(lambda v: 235).save(folder / "zz_blank.png")
    (folder / "zz_broken.png").write_bytes(b"this is not a png")
    return folder


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_csv_to_stdout_has_exact_columns_and_one_row_per_image(runner, scans):
    result = runner.invoke(main, ["run", str(scans), "--quiet"])
    assert result.exit_code == 1  # the broken file
    assert result.stdout.splitlines()[0] == ",".join(COLUMNS)
    got = rows(result.stdout)
    assert len(got) == 7
    by_name = {Path(r["path"]).name: r for r in got}
    assert by_name["zz_blank.png"]["status"] == "blank" and by_name["zz_blank.png"]["digit"] == ""
    broken = by_name["zz_broken.png"]
    assert broken["status"] == "error" and "not an image" in broken["error"] and broken["digit"] == ""
    ok = [r for r in got if r["status"] == "ok"]
    assert len(ok) == 5
    for r in ok:
        assert r["digit"] in "0123456789" and 0.0 < float(r["confidence"]) <= 1.0
        assert r["inverted"] in ("true", "false") and r["error"] == ""


def test_stdout_carries_results_only_and_summary_goes_to_stderr(runner, scans):
    result = runner.invoke(main, ["run", str(scans)])
    assert len(rows(result.stdout)) == 7  # nothing but CSV on stdout
    assert "digitscan run" in result.stderr and "images" in result.stderr and "7" in result.stderr


def test_quiet_prints_nothing_on_stderr_when_all_is_well(runner, scans):
    (scans / "zz_broken.png").unlink()
    result = runner.invoke(main, ["run", str(scans), "--quiet"])
    assert result.exit_code == 0
    assert result.stderr == ""


@pytest.mark.parametrize("name,flag", [("out.json", []), ("out.jsonl", []), ("out.txt", ["--format", "json"])])
def test_json_and_jsonl_hold_the_same_records_as_csv(runner, scans, tmp_path, name, flag):
    runner.invoke(main, ["run", str(scans), "-q", "--out", str(tmp_path / "out.csv")])
    reference = rows((tmp_path / "out.csv").read_text(encoding="utf-8"))
    result = runner.invoke(main, ["run", str(scans), "-q", "--out", str(tmp_path / name), *flag])
    assert result.exit_code == 1 and result.stdout == ""
    text = (tmp_path / name).read_text(encoding="utf-8")
    records = json.loads(text) if name != "out.jsonl" else [json.loads(line) for line in text.splitlines()]
    assert [list(r) for r in records] == [COLUMNS] * 7
    for rec, ref in zip(records, reference, strict=True):
        assert rec["path"] == ref["path"] and rec["status"] == ref["status"]
        assert rec["digit"] == (int(ref["digit"]) if ref["digit"] else None)
        assert rec["error"] == (ref["error"] or None)
        if rec["confidence"] is not None:
            assert rec["confidence"] == pytest.approx(float(ref["confidence"]), abs=1e-6)


def test_probs_adds_ten_probabilities_that_sum_to_one(runner, scans):
    result = runner.invoke(main, ["run", str(scans), "-q", "--probs"])
    got = rows(result.stdout)
    assert list(got[0]) == COLUMNS + PROB_COLUMNS
    for r in got:
        if r["status"] == "ok":
            probs = [float(r[c]) for c in PROB_COLUMNS]
            assert sum(probs) == pytest.approx(1.0, abs=1e-4)
            assert max(probs) == pytest.approx(float(r["confidence"]), abs=1e-6)
            assert probs.index(max(probs)) == int(r["digit"])
        else:
            assert all(r[c] == "" for c in PROB_COLUMNS)


def test_paths_from_stdin(runner, scans):
    files = sorted(str(p) for p in scans.iterdir() if p.suffix == ".png")
    result = runner.invoke(main, ["run", "-", "-q", "--format", "jsonl"], input="\n".join(files) + "\n")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in records] == files


def test_files_and_folders_mix_and_recursive(runner, scans, tmp_path):
    nested = scans / "more"
    nested.mkdir()
    draw_digit().save(nested / "seven.png")
    single = tmp_path / "single.png"
    draw_digit().save(single)
    flat = rows(runner.invoke(main, ["run", str(scans), str(single), "-q"]).stdout)
    deep = rows(runner.invoke(main, ["run", str(scans), str(single), "-q", "--recursive"]).stdout)
    assert len(flat) == 8 and flat[-1]["path"] == str(single)
    assert len(deep) == 9 and any(r["path"].endswith("more/seven.png") for r in deep)


def test_awkward_file_names_round_trip_through_csv(runner, tmp_path):
    folder = tmp_path / "names"
    folder.mkdir()
    names = ["a,b.png", 'say "hi".png', "new\nline.png", "ünïcødé 七 ✓.png", "space d.png"]
    for n in names:
        draw_digit().save(folder / n)
    result = runner.invoke(main, ["run", str(folder), "-q"])
    assert result.exit_code == 0
    assert sorted(Path(r["path"]).name for r in rows(result.stdout)) == sorted(names)


def test_exit_2_for_missing_input_without_traceback(runner, tmp_path):
    result = runner.invoke(main, ["run", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "nope: no such file or folder" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_exit_2_for_missing_output_folder(runner, scans, tmp_path):
    result = runner.invoke(main, ["run", str(scans), "--out", str(tmp_path / "missing" / "r.csv")])
    assert result.exit_code == 2 and "does not exist" in result.stderr


@pytest.mark.parametrize("content,expected", [(b"hello", "not a TorchScript archive"), (None, "not found")])
def test_exit_2_for_unusable_weights_naming_the_file(runner, scans, tmp_path, content, expected):
    weights = tmp_path / "w.pt"
    if content is not None:
        weights.write_bytes(content)
    result = runner.invoke(main, ["run", str(scans), "--weights", str(weights)])
    assert result.exit_code == 2
    assert str(weights) in result.stderr and expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_exit_2_for_an_unknown_device(runner, scans):
    result = runner.invoke(main, ["run", str(scans), "--device", "tpu"])
    assert result.exit_code == 2 and "tpu" in result.stderr


def test_exit_2_when_there_are_no_images_and_no_output_is_left(runner, tmp_path):
    result = runner.invoke(main, ["run", str(tmp_path), "--out", str(tmp_path / "r.csv")])
    assert result.exit_code == 2 and "no images found" in result.stderr
    assert not (tmp_path / "r.csv").exists()


def test_invert_flag_changes_the_reading(runner, tmp_path):
    draw_digit().save(tmp_path / "seven.png")
    auto = rows(runner.invoke(main, ["run", str(tmp_path), "-q"]).stdout)[0]
    forced = rows(runner.invoke(main, ["run", str(tmp_path), "-q", "--invert", "no"]).stdout)[0]
    assert auto["inverted"] == "true" and forced["inverted"] == "false"


@pytest.mark.parametrize("change", [["--probs"], ["--invert", "yes"], ["--weights", "other.pt"]])
def test_resume_refuses_settings_that_would_change_the_rows(runner, scans, tmp_path, monkeypatch, change):
    monkeypatch.chdir(tmp_path)
    shutil.copy(default_weights(), tmp_path / "other.pt")
    first = runner.invoke(main, ["run", str(scans), "--out", "r.csv", "-q"])
    assert first.exit_code == 1 and Path("r.csv.settings.json").exists()
    if change[0] == "--weights":  # the same network under another name is fine; other weights are not
        assert runner.invoke(main, ["run", str(scans), "--out", "r.csv", "-q", "--resume", *change]).exit_code == 0
        _retrain_one_bias(tmp_path / "other.pt")
    before = Path("r.csv").read_bytes()
    refused = runner.invoke(main, ["run", str(scans), "--out", "r.csv", "-q", "--resume", *change])
    assert refused.exit_code == 2 and change[0] in refused.stderr and refused.stderr.count("\n") == 1
    assert Path("r.csv").read_bytes() == before


def _retrain_one_bias(path: Path) -> None:
    """Other weights for the same network: nudge one bias and save the archive again."""
    import torch

    model = torch.jit.load(str(path))
    last_bias = [p for name, p in model.named_parameters() if name.endswith("bias")][-1]
    with torch.no_grad():
        last_bias[0] += 0.5
    model.save(str(path))


def test_resume_checks_the_columns_of_a_file_without_a_settings_record(runner, scans, tmp_path):
    out = tmp_path / "r.jsonl"
    assert runner.invoke(main, ["run", str(scans), "--out", str(out), "-q"]).exit_code == 1
    Path(str(out) + ".settings.json").unlink()
    refused = runner.invoke(main, ["run", str(scans), "--out", str(out), "-q", "--resume", "--probs"])
    assert refused.exit_code == 2 and "--probs" in refused.stderr


def test_an_unexpected_error_is_one_line_and_exit_3_with_the_traceback_under_debug(runner, scans, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("digitscan.run.run", broken)
    plain = runner.invoke(main, ["run", str(scans)])
    assert plain.exit_code == 3
    assert plain.stderr.startswith("digitscan: internal error: ZeroDivisionError: a bug")
    assert plain.stderr.count("\n") == 1
    debug = runner.invoke(main, ["--debug", "run", str(scans)])
    assert debug.exit_code == 3 and "Traceback" in debug.stderr
    assert "Traceback" in runner.invoke(main, ["run", str(scans)], env={"DIGITSCAN_DEBUG": "1"}).stderr


def test_importing_the_cli_does_not_import_torch():
    probe = "import sys, digitscan.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "False\n"


def test_a_command_freezes_what_its_imports_made_and_collects_garbage_after_them(tmp_path):
    shutil.copy(EXAMPLES / "scans" / "bitmap_1.bmp", tmp_path)
    probe = ("import gc, sys\nfrom digitscan.cli import main\n"
             f"main(['run', {str(tmp_path)!r}, '-q', '--out', {str(tmp_path / 'out.csv')!r}], standalone_mode=False)\n"
             "print(gc.isenabled(), gc.get_freeze_count() > 100_000, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "True True True" and done.stderr == ""


MALLINFO = """
import ctypes
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                     "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Info
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a setting of glibc's allocator")
def test_the_command_line_keeps_freed_memory_for_the_next_batch_and_the_library_does_not(tmp_path):
    """With glibc, a block of a canvas's size then comes from the heap (reused) instead of fresh pages."""
    shutil.copy(EXAMPLES / "scans" / "bitmap_1.bmp", tmp_path)
    probe = MALLINFO + f"""
import sys, numpy as np
from digitscan.cli import main
import digitscan
if sys.argv[1] == "cli":
    main(["run", {str(tmp_path)!r}, "-q", "--out", {str(tmp_path / "out.csv")!r}], standalone_mode=False)
else:
    digitscan.predict([{str(tmp_path / "bitmap_1.bmp")!r}])
before = mallinfo2().hblkhd
block = np.ones(16 << 20, dtype=np.uint8)
print(mallinfo2().hblkhd - before)
"""
    mapped = {how: int(subprocess.run([sys.executable, "-c", probe, how], capture_output=True, text=True,
                                      check=True).stdout.split()[-1]) for how in ("cli", "library")}
    assert mapped["cli"] == 0 and mapped["library"] >= 16 << 20  # bytes in blocks of their own (mmap)


def test_the_readme_synopsis_lists_exactly_the_flags_of_run_help():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    synopsis = readme.split("```\ndigitscan run INPUT...", 1)[1].split("```", 1)[0]
    flags = {opt for param in run_command.params for opt in param.opts if opt.startswith("--")} - {"--help"}
    assert set(re.findall(r"--[a-z][a-z-]*", synopsis)) == flags
