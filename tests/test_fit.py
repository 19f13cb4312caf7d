"""`digitscan fit` and `digitscan eval`: short fits, resume, atomic checkpoints, labelled folders."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from digitscan import augment as augment_module
from digitscan import fit as fit_module
from digitscan import strokes
from digitscan.cli import main
from digitscan.fit import FitConfig, fit
from digitscan.synth import STYLES
from digitscan.trainingdata import load_labelled, load_mnist


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, mnist_root) -> Path:
    """Subfolders 0..9 with three rendered scans each, plus one broken file."""
    folder = tmp_path_factory.mktemp("labelled")
    images, labels = load_mnist(mnist_root, train=True)
    rng = np.random.default_rng(5)
    styles = list(STYLES.values())
    for digit in range(10):
        (folder / str(digit)).mkdir()
        picks = torch.nonzero(labels[-5000:] == digit).flatten()[:3] + 55000
        for k, i in enumerate(picks.tolist()):
            styles[(digit + k) % len(styles)](images[i].numpy(), rng).save(folder / str(digit) / f"{k}.png")
    (folder / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    return folder


def test_short_fit_writes_an_archive_that_run_accepts(runner, mnist_root, tmp_path):
    out = tmp_path / "w.pt"
    result = runner.invoke(main, ["fit", "--scratch", "--limit", "3000", "--epochs", "1", "--data", str(mnist_root),
                                  "--out", str(out), "--seed", "3", "--calibrate", "300"])
    assert result.exit_code == 0, result.output
    card = json.loads(out.with_suffix(".json").read_text())
    command = (f"digitscan fit --scratch --limit 3000 --epochs 1 --data {mnist_root} --out {out} --seed 3 "
               "--calibrate 300")
    assert card["command"] == command
    assert card["train_images"] == 3000 and 0.5 < card["mnist_test_accuracy"] <= 1.0
    calibration = card["calibration"]
    assert 250 < calibration["renders"] <= 300 and calibration["error_after"] <= calibration["error_before"]
    assert float(torch.jit.load(str(out)).temperature) == pytest.approx(calibration["temperature"], abs=1e-4)
    assert "calibrated on" in result.stderr
    assert "MNIST test acc" in result.stderr and result.stdout == ""
    scored = runner.invoke(main, ["run", str(Path(__file__).parent.parent / "examples" / "scans"), "-q",
                                  "--weights", str(out)])
    assert scored.exit_code == 0 and len(scored.stdout.splitlines()) > 30


def test_interrupted_fit_resumes_to_the_same_weights(mnist_root, tmp_path):
    def config(name: str, **extra) -> FitConfig:
        return FitConfig(data=mnist_root, out=tmp_path / f"{name}.pt", epochs=2, batch_size=128, limit=640,
                         scratch=True, seed=7, calibrate=0, **extra)

    straight = fit(config("straight"), log=lambda _: None)

    def ctrl_c(epoch: int, step: int) -> None:
        if (epoch, step) == (0, 2):
            os.kill(os.getpid(), signal.SIGINT)

    messages: list[str] = []
    stopped = fit(config("split"), log=messages.append, on_step=ctrl_c)
    assert stopped.interrupted and not (tmp_path / "split.pt").exists()
    assert any("--resume" in m and "split.ckpt" in m for m in messages)
    state = torch.load(tmp_path / "split.ckpt", weights_only=True)
    assert (state["epoch"], state["step"]) == (0, 3)

    resumed = fit(config("split", resume=tmp_path / "split.ckpt"), log=lambda _: None)
    assert not resumed.interrupted and len(resumed.history) == 2
    a = torch.jit.load(str(tmp_path / "straight.pt")).state_dict()
    b = torch.jit.load(str(tmp_path / "split.pt")).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    assert straight.history[-1]["test_acc"] == pytest.approx(resumed.history[-1]["test_acc"], abs=2e-3)


def test_fit_writes_the_moving_average_of_the_weights_it_trained(mnist_root, tmp_path):
    """The archive holds the average kept in the checkpoint (updated after every step), not the last step's."""
    cfg = FitConfig(data=mnist_root, out=tmp_path / "w.pt", epochs=2, batch_size=128, limit=640, scratch=True,
                    seed=7, calibrate=0)
    fit(cfg, log=lambda _: None)
    state = torch.load(cfg.checkpoint_path, weights_only=True)
    assert int(state["average"]["n_averaged"]) == 2 * 640 // 128
    average = {k.removeprefix("module."): v for k, v in state["average"].items() if k.startswith("module.")}
    archive = torch.jit.load(str(cfg.out)).state_dict()
    assert archive.keys() == average.keys()
    for key in archive:
        torch.testing.assert_close(archive[key], average[key])
    trained = [key for key in archive if key.endswith("weight")]
    assert all(not torch.allclose(archive[key], state["model"][key]) for key in trained)


def test_a_failed_checkpoint_write_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    path = tmp_path / "c.ckpt"
    fit_module._save_checkpoint(path, {"epoch": 1, "weights": torch.ones(3)})

    def crash(obj, f):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(fit_module.torch, "save", crash)
    with pytest.raises(OSError):
        fit_module._save_checkpoint(path, {"epoch": 2, "weights": torch.zeros(3)})
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 1 and torch.equal(state["weights"], torch.ones(3))


def test_labelled_folder_goes_through_the_run_preprocessing(labelled):
    images, labels, skipped = load_labelled(labelled)
    assert images.shape == (30, 28, 28) and images.dtype == torch.uint8
    assert sorted(labels.tolist()) == sorted(list(range(10)) * 3)
    assert len(skipped) == 1 and "broken.png" in skipped[0]


def test_fit_with_labelled_scans(runner, mnist_root, labelled, tmp_path):
    result = runner.invoke(main, ["fit", "--scratch", "--limit", "500", "--epochs", "1", "--calibrate", "0",
                                  "--data", str(mnist_root),
                                  "--labeled", str(labelled), "--out", str(tmp_path / "w.pt")])
    assert result.exit_code == 0, result.output
    assert "added 30 labelled scans" in result.stderr and "broken.png" in result.stderr
    repeat = round(fit_module.LABELLED_SHARE * 500 / 30)
    assert json.loads((tmp_path / "w.json").read_text())["train_images"] == 500 + 30 * repeat


def test_a_few_labelled_scans_are_repeated_to_their_share_of_the_epoch(runner, mnist_root, labelled, tmp_path):
    result = runner.invoke(main, ["fit", "--scratch", "--limit", "3000", "--epochs", "1", "--calibrate", "0",
                                  "--data", str(mnist_root), "--labeled", str(labelled),
                                  "--out", str(tmp_path / "w.pt")])
    assert result.exit_code == 0, result.output
    repeat = round(fit_module.LABELLED_SHARE * 3000 / 30)
    assert "added 30 labelled scans" in result.stderr and f"each {repeat} times" in result.stderr
    assert json.loads((tmp_path / "w.json").read_text())["train_images"] == 3000 + 30 * repeat


def test_eval_on_a_labelled_folder_prints_accuracy_and_confusion(runner, labelled):
    result = runner.invoke(main, ["eval", "--labeled", str(labelled)])
    assert result.exit_code == 0, result.output
    assert "true \\ predicted" in result.stdout
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("accuracy")][0]
    assert float(line.split()[1]) >= 0.9 and "31 images" in line and "1 blank or unreadable" in line


@pytest.fixture()
def corrections(labelled, tmp_path) -> Path:
    """A corrections.csv as review writes it: absolute paths, a 'none' row; and a relative path, a blank label."""
    files = sorted(p for p in labelled.rglob("*.png") if p.name != "broken.png")
    shutil.copy(files[0], tmp_path / "here.png")
    lines = ["path,label", *(f"{p},{p.parent.name}" for p in files[1:]), f"{files[0]},none", "here.png,"
             + files[0].parent.name, f"{files[1]},"]
    (tmp_path / "corrections.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "corrections.csv"


def test_a_corrections_csv_is_labelled_scans_with_paths_beside_it(corrections, labelled):
    images, labels, skipped = load_labelled(corrections)
    folder_images, folder_labels, _ = load_labelled(labelled)
    assert not skipped and images.shape == (30, 28, 28)  # 28 absolute + here.png; 'none' and '' are left out
    assert sorted(labels.tolist()) == sorted(folder_labels.tolist())


def test_a_folder_with_some_of_the_digits_is_enough(labelled, tmp_path):
    for digit in ("3", "7"):
        shutil.copytree(labelled / digit, tmp_path / digit)
    images, labels, skipped = load_labelled(tmp_path)
    assert sorted(set(labels.tolist())) == [3, 7] and len(images) == 6 and len(skipped) == 1


def test_fit_and_eval_take_a_corrections_csv(runner, mnist_root, corrections, tmp_path):
    result = runner.invoke(main, ["fit", "--scratch", "--limit", "500", "--epochs", "1", "--calibrate", "0",
                                  "--data", str(mnist_root),
                                  "--labeled", str(corrections), "--out", str(tmp_path / "w.pt")])
    assert result.exit_code == 0, result.output
    assert f"added 30 labelled scans from {corrections}" in result.stderr
    result = runner.invoke(main, ["eval", "--labeled", str(corrections)])
    assert result.exit_code == 0, result.output
    assert "30 images" in [ln for ln in result.stdout.splitlines() if ln.startswith("accuracy")][0]


@pytest.mark.parametrize("content, problem", [
    ("path,label\na.png,7a\n", "line 2: label must be digits 0 to 9 or none, not '7a'"),
    ("file,digit\na.png,1\n", "a labels CSV needs the columns path and label"),
    ("path,label\na.png,none\n", "no rows labelled 0 to 9"),
])
def test_a_bad_labels_csv_is_one_line_naming_it(runner, tmp_path, content, problem):
    (tmp_path / "labels.csv").write_text(content)
    result = runner.invoke(main, ["eval", "--labeled", str(tmp_path / "labels.csv")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"digitscan: {tmp_path / 'labels.csv'}: {problem}".replace(": line", ", line")


def test_eval_on_mnist_test_matches_the_card(runner, mnist_root):
    result = runner.invoke(main, ["eval", "--data", str(mnist_root)])
    assert result.exit_code == 0
    from digitscan.model import card_path, default_weights

    card = json.loads(card_path(default_weights()).read_text())
    assert f"accuracy {card['mnist_test_accuracy']:.4f} on 10,000 images" in result.stdout


def test_missing_data_is_one_clear_line_and_exit_2(runner, tmp_path):
    result = runner.invoke(main, ["fit", "--scratch", "--data", str(tmp_path / "nothing"), "--epochs", "1"])
    assert result.exit_code == 2
    assert result.stderr.startswith("digitscan: MNIST") and "--data" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_augmentation_draws_continental_forms_by_label(mnist_root, monkeypatch):
    """Flags go on 1s, bars on 7s, tails on 9s, open tops on 4s; other digits only get the usual distortions."""
    monkeypatch.setattr(augment_module, "CONTINENTAL", 1.0)
    monkeypatch.setattr(augment_module, "OPEN_FOUR", 1.0)
    torch.manual_seed(0)
    images, labels = load_mnist(mnist_root, train=True)
    pick = torch.cat([torch.nonzero(labels == d).flatten()[:20] for d in (0, 1, 4, 7, 9)])
    x = images[pick].unsqueeze(1).float() / 255
    changed = (augment_module.continental(x, labels[pick]) - x).abs().sum(dim=(1, 2, 3)) > 1.0
    assert changed.view(5, 20).float().mean(dim=1).tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    ones = augment_module.continental(x[20:40], labels[pick][20:40])
    gained = (ones - x[20:40]).clamp(min=0)[:, 0]
    # A 1's flag runs down to the left from its top: new ink lies mostly left of the top of the stem
    # (not on every 1: a short flag on a 1 that leans right may not reach past it).
    digit = x[20:40, 0]
    top = (digit > 0.5).any(dim=2).float().argmax(dim=1)
    tops = [digit[k, int(t):int(t) + 3].sum(dim=0) for k, t in enumerate(top)]
    head = torch.stack([(row * torch.arange(28.0)).sum() / row.sum() for row in tops])
    left = torch.arange(28.0).view(1, 1, 28) < head.view(-1, 1, 1)
    leftwards = (gained * left).sum(dim=(1, 2)) > (gained * ~left).sum(dim=(1, 2))
    assert float(leftwards.float().mean()) >= 0.8


def test_fit_interrupted_then_resumed_from_another_folder_finishes_the_same_job(runner, mnist_root, labelled,
                                                                                 tmp_path, monkeypatch):
    """`fit --resume CKPT` alone brings back --out, --data, --labeled and the schedule."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    job = ["--scratch", "--labeled", str(labelled), "--data", str(mnist_root), "--epochs", "2", "--limit", "640",
           "--seed", "7", "--calibrate", "0"]
    assert runner.invoke(main, ["fit", *job, "--out", "straight.pt"]).exit_code == 0

    calls = []

    def ctrl_c_at_step_three(x, labels):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return augment_module.augment(x, labels)

    monkeypatch.setattr(fit_module, "augment", ctrl_c_at_step_three)
    stopped = runner.invoke(main, ["fit", *job, "--out", "tuned.pt"])
    assert stopped.exit_code == 130 and "--resume tuned.ckpt" in stopped.stderr
    monkeypatch.setattr(fit_module, "augment", augment_module.augment)

    monkeypatch.chdir(elsewhere)
    resumed = runner.invoke(main, ["fit", "--resume", str(work / "tuned.ckpt")])
    assert resumed.exit_code == 0, resumed.output
    assert (work / "tuned.pt").exists() and not list(elsewhere.iterdir())
    a = torch.jit.load(str(work / "straight.pt")).state_dict()
    b = torch.jit.load(str(work / "tuned.pt")).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_flags_that_would_change_a_resumed_fit_are_refused(runner, mnist_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = ["fit", "--scratch", "--data", str(mnist_root), "--epochs", "1", "--limit", "256", "--calibrate", "0",
           "--out", "a.pt"]
    assert runner.invoke(main, job).exit_code == 0
    refused = runner.invoke(main, ["fit", "--resume", "a.ckpt", "--epochs", "3", "--out", "b.pt", "--from", "a.pt"])
    assert refused.exit_code == 2
    assert refused.stderr.count("\n") == 1 and all(f in refused.stderr for f in ("--epochs", "--out", "--from"))
    same = runner.invoke(main, ["fit", "--resume", "a.ckpt", "--epochs", "1", "--device", "cpu"])
    assert same.exit_code == 0, same.output  # the job's own values, and another device, are fine


@pytest.mark.parametrize("damage", [lambda s: s.pop("optimizer"), lambda s: s.update(epoch="three"),
                                    lambda s: s.update(config=[1, 2])])
def test_a_malformed_checkpoint_is_one_line_not_a_traceback(runner, mnist_root, tmp_path, monkeypatch, damage):
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(main, ["fit", "--scratch", "--data", str(mnist_root), "--epochs", "1", "--limit", "128",
                                "--calibrate", "0", "--out", "a.pt"]).exit_code == 0
    state = torch.load("a.ckpt", weights_only=True)
    damage(state)
    torch.save(state, "a.ckpt")
    result = runner.invoke(main, ["fit", "--resume", "a.ckpt"])
    assert result.exit_code == 2 and "not a digitscan checkpoint" in result.stderr
    assert result.stderr.count("\n") == 1


def test_drawn_forms_replace_only_nines_and_fours_and_fill_mnists_box(monkeypatch):
    """Every 9 and 4 is redrawn from strokes when DRAWN is 1; other digits are left as they are. A drawn
    digit's ink is 20 px on its longer side, inside the 28 px frame, as MNIST's digits are."""
    monkeypatch.setattr(augment_module, "DRAWN", 1.0)
    torch.manual_seed(0)
    labels = torch.tensor([0, 4, 7, 9] * 10)
    out = augment_module.drawn(torch.zeros(40, 1, 28, 28), labels)
    inked = out[:, 0] > 0.05
    assert inked.any(dim=(1, 2)).tolist() == [int(d) in (4, 9) for d in labels]
    for ink in inked[(labels == 4) | (labels == 9)]:
        rows, cols = ink.any(dim=1).nonzero().flatten(), ink.any(dim=0).nonzero().flatten()
        assert 19 <= max(int(rows[-1] - rows[0]), int(cols[-1] - cols[0])) + 1 <= 22
        assert min(int(rows[0]), int(cols[0])) >= 2 and max(int(rows[-1]), int(cols[-1])) <= 25


def test_elastic_distortion_bends_a_share_of_the_digits_within_its_limit(monkeypatch):
    """Offsets (in grid units, 2 across the frame) are zero for the digits left straight; for the
    others, at most ELASTIC_PIXELS pixels, and no shift of the whole digit (that is the affine part's)."""
    torch.manual_seed(0)
    x = torch.zeros(400, 1, 28, 28)
    offsets = augment_module._elastic(x)
    bent = offsets.abs().amax(dim=(1, 2, 3)) > 0
    assert 0.4 < bent.float().mean() < 0.6  # ELASTIC is a half
    pixels = offsets * 28 / 2
    assert pixels.abs().max() <= augment_module.ELASTIC_PIXELS + 1e-4
    assert pixels[bent].abs().amax(dim=(1, 2, 3)).mean() > augment_module.ELASTIC_PIXELS / 4
    assert pixels.mean(dim=(1, 2)).abs().max() < 1e-4
    monkeypatch.setattr(augment_module, "ELASTIC", 0.0)
    assert not augment_module._elastic(x).any()


def test_the_rarer_continental_forms_are_drawn_where_their_shares_say(monkeypatch):
    """A barred 7 may get a foot to the right (new ink along its bottom, right of its foot), a drawn 9's
    tail may curl back up towards the loop (more ink on the left below the loop), a drawn 4's stem may stop just
    below the bar (which then lies lower in the frame). Each share at 1 against 0, the same random draws."""
    def draw(make):
        torch.manual_seed(0)
        return make()

    sevens = torch.zeros(50, 1, 28, 28)
    sevens[:, 0, 4:6, 8:20] = 1.0  # a 7: a top bar and a stem down to the left
    for row in range(6, 24):
        sevens[:, 0, row, 19 - (row - 6) // 2:21 - (row - 6) // 2] = 1.0
    monkeypatch.setattr(augment_module, "CONTINENTAL", 1.0)
    feet = []
    for share in (0.0, 1.0):
        monkeypatch.setattr(augment_module, "FOOTED_SEVEN", share)
        out = draw(lambda: augment_module.continental(sevens, torch.full((50,), 7)))
        feet.append(float(out[:, 0, 21:24, 16:].sum()))
    assert feet[0] == 0.0 and feet[1] > 50 * 2.0

    low_left, bar_rows = [], []
    for share in (0.0, 1.0):
        monkeypatch.setattr(strokes, "CURLED", share)
        monkeypatch.setattr(strokes, "SHORT_STEM", share)
        nines = draw(lambda: strokes.nines(400, torch.device("cpu")))
        low_left.append(float(nines[:, 14:19, :12].sum()))
        fours = draw(lambda: strokes.fours(400, torch.device("cpu")))
        bar_rows.append(float((fours > 0.5).sum(dim=2).argmax(dim=1).float().mean()))
    assert low_left[1] > 1.5 * low_left[0]
    assert bar_rows[1] > bar_rows[0] + 1.0


def test_pairs_put_two_different_digits_of_the_batch_side_by_side_in_one_frame(monkeypatch):
    """A tall and a short digit (outlined boxes): every pair frame holds both, one beside the other, wider
    than tall, 20 px across as MNIST frames a digit; PAIR_GAP apart (an empty column between them)."""
    digits = torch.zeros(2, 1, 28, 28)
    digits[0, 0, 5:23, 8:20] = 1.0
    digits[0, 0, 7:21, 10:18] = 0.0  # 18 rows tall
    digits[1, 0, 9:19, 8:20] = 1.0
    digits[1, 0, 11:17, 10:18] = 0.0  # 10 rows tall
    monkeypatch.setattr(augment_module, "PAIR_GAP", (4, 4))
    torch.manual_seed(0)
    frames = augment_module.pairs(digits, 20)[:, 0] > 0.3
    assert frames.shape == (20, 28, 28)
    for ink in frames:
        cols = ink.any(dim=0).nonzero().flatten()
        assert 19 <= int(cols[-1] - cols[0]) + 1 <= 21
        middle = ink[:, int(cols[0]):int(cols[-1]) + 1].any(dim=0)
        assert not middle.all()  # the gap
        halves = ink[:, :14].any(dim=1).sum(), ink[:, 14:].any(dim=1).sum()
        assert max(halves) > 1.5 * min(halves)  # one tall, one short: never a digit beside itself
        assert int(ink.any(dim=1).sum()) < int(cols[-1] - cols[0])
    assert augment_module.pairs(digits, 0).shape == (0, 1, 28, 28)


def test_a_last_batch_too_small_for_pairs_keeps_the_loss_a_number(mnist_root, tmp_path):
    """130 images in batches of 128: the last batch of 2 holds no pair (PAIRS of 2 rounds to 0), and the
    epoch's loss stays finite."""
    cfg = FitConfig(data=mnist_root, out=tmp_path / "w.pt", epochs=1, batch_size=128, limit=130, scratch=True,
                    seed=7, calibrate=0)
    fit(cfg, log=lambda _: None)
    card = json.loads(cfg.out.with_suffix(".json").read_text())
    assert np.isfinite(card["epochs"][0]["loss"])


class _SaysSeven(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 10, device=x.device).index_fill(1, torch.tensor([7], device=x.device), 10.0)


def test_a_teacher_pulls_the_model_towards_its_readings_and_the_card_and_checkpoint_name_it(runner, mnist_root,
                                                                                          tmp_path, monkeypatch):
    """`--teacher` blends the teacher's readings into the loss: a teacher that reads every digit as 7 makes the
    model read far more 7s than the same fit without it; a resumed fit keeps its teachers."""
    monkeypatch.chdir(tmp_path)
    torch.jit.script(_SaysSeven()).save("sevens.pt")
    job = ["fit", "--scratch", "--data", str(mnist_root), "--epochs", "2", "--limit", "640", "--seed", "7",
           "--calibrate", "0"]
    assert runner.invoke(main, [*job, "--out", "alone.pt"]).exit_code == 0
    taught = runner.invoke(main, [*job, "--out", "taught.pt", "--teacher", "sevens.pt"])
    assert taught.exit_code == 0, taught.output
    assert "distilling 1 teacher: sevens.pt" in taught.stderr

    images, _ = load_mnist(mnist_root, train=True)
    holdout = images[-1000:]

    def sevens(archive: str) -> float:
        return float((fit_module.probabilities(torch.jit.load(archive), holdout, torch.device("cpu")).argmax(1) == 7)
                     .float().mean())

    assert sevens("alone.pt") < 0.3 < 0.7 < sevens("taught.pt")
    card = json.loads(Path("taught.json").read_text())
    assert card["teachers"] == [{"archive": "sevens.pt", "sha256": fit_module.sha256(Path("sevens.pt"))}]
    assert json.loads(Path("alone.json").read_text())["teachers"] == []

    resumed = fit_module.resumed_config(Path("taught.ckpt"), {}, "cpu")
    assert resumed.teachers == (tmp_path / "sevens.pt",)
    refused = runner.invoke(main, ["fit", "--resume", "taught.ckpt", "--teacher", "alone.pt"])
    assert refused.exit_code == 2 and "--teacher" in refused.stderr


def test_a_teacher_that_is_not_an_archive_is_one_line(runner, mnist_root, tmp_path):
    (tmp_path / "notes.pt").write_text("not weights")
    result = runner.invoke(main, ["fit", "--data", str(mnist_root), "--limit", "128", "--calibrate", "0",
                                  "--out", str(tmp_path / "w.pt"), "--teacher", str(tmp_path / "notes.pt")])
    assert result.exit_code == 2 and "notes.pt: not a TorchScript archive" in result.stderr
    assert result.stderr.count("\n") == 1
