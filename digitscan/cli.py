"""The `digitscan` command line. Heavy imports (torch) happen inside commands, so --help stays fast.

Each flag is defined once below and shared by the commands that take it; each command builds its
typed settings (`RunOptions`, `FitConfig`) explicitly and hands them whole to the engine. The
project's own errors (`DigitscanError`) are caught in one place, `_Main.invoke`.
"""

from __future__ import annotations

import gc
import os
import shlex
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from click.core import ParameterSource

from .allocator import keep_freed_memory
from .defaults import (
    CALIBRATION_RENDERS,
    FIT_BATCH,
    FIT_EPOCHS,
    FIT_LR,
    LINE_BATCH,
    LINE_LR,
    LINES_NAME,
    RUN_BATCH,
    WATCH_STEADY,
    WEIGHTS_NAME,
)
from .errors import INTERNAL_ERROR, INTERRUPTED, SOME_UNREADABLE, STDOUT_CLOSED, USAGE_ERROR, DigitscanError

if TYPE_CHECKING:
    from rich.console import Console

    from .linefit import LineFitConfig
    from .preprocess import Invert

DEBUG_ENV = "DIGITSCAN_DEBUG"


def _fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """One line on standard error, no traceback, then exit."""
    click.echo(f"digitscan: {message}", err=True)
    sys.exit(code)


class _Main(click.Group):
    """The command group: keeps the raw arguments (so `fit` can record its exact command line) and
    turns errors into one line and an exit status."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["digitscan.argv"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        keep_freed_memory()  # this process is ours: its allocator may be set for batches of tensors
        try:
            return super().invoke(ctx)
        except DigitscanError as exc:
            _fail(str(exc))
        except BrokenPipeError:  # the reader of our output went away (`| head -1`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(STDOUT_CLOSED)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            debug = bool(ctx.meta.get("digitscan.debug"))
            if debug:
                traceback.print_exc()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "(no message)"
            hint = "" if debug else f" (run with --debug or {DEBUG_ENV}=1 for the traceback)"
            _fail(f"internal error: {type(exc).__name__}: {first}{hint}", INTERNAL_ERROR)


@contextmanager
def _importing() -> Iterator[None]:
    """Around a command's heavy imports (torch): the garbage collector waits while they create their
    hundreds of thousands of objects, which are then frozen out of later collections (the last one,
    at exit, included): `digitscan run` on one image takes 0.3 s less. Not for `fit`: what it imports
    (triton) complains at exit of objects left uncollected, and a fit takes minutes anyway."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.freeze()


def _command_line() -> str:
    return shlex.join(["digitscan", *click.get_current_context().meta.get("digitscan.argv", [])])


def _remember_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    ctx.meta["digitscan.debug"] = value
    return value


# Flags shared by several commands: one definition each.
device_option = click.option("--device", default="auto", show_default=True,
                             help="auto (CUDA when there is one), cpu, cuda or cuda:N.")
weights_option = click.option("--weights", type=click.Path(path_type=Path), default=None,
                              help="A TorchScript archive to use instead of the shipped weights.")
data_option = click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
                           help="torchvision MNIST root (downloaded there if missing). "
                                "[default: ~/.cache/digitscan/mnist]")
labeled_option = click.option("--labeled", type=click.Path(exists=True, path_type=Path), default=None,
                              help="Your labelled scans: a folder with subfolders 0 to 9 (any of them), or a CSV "
                                   "of path,label such as review's corrections.csv (a label of several digits: "
                                   "a field's).")
invert_option = click.option("--invert", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True,
                             help="yes: dark ink on light paper; no: light ink on dark; auto: decide per image.")
workers_option = click.option("--workers", type=click.IntRange(0), default=None,
                              help="Decoding processes (0 decodes in the main process). [default: one per core]")


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="digitscan")
@click.option("--debug", is_flag=True, envvar=DEBUG_ENV, is_eager=True, expose_value=False,
              callback=_remember_debug, help=f"Show the traceback of an internal error (or set {DEBUG_ENV}=1).")
def main() -> None:
    """Read handwritten digits from folders of scanned images.

    \b
    Exit status: 0 success; 1 some images could not be read (the rest are written);
    2 usage or set-up error; 3 internal error (a bug: please report it); 130 interrupted
    (Ctrl-C, SIGTERM or SIGHUP); 141 the reader of standard output went away.
    """


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--out", "-o", default="-", show_default=True, metavar="PATH",
              help="Results file (.csv, .json or .jsonl); - for standard output.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "jsonl"]), default=None,
              help="Output format. [default: from --out's extension, else csv]")
@click.option("--recursive", "-r", is_flag=True, help="Also scan subfolders.")
@click.option("--batch-size", default=RUN_BATCH, show_default=True, type=click.IntRange(1))
@workers_option
@device_option
@weights_option
@invert_option
@click.option("--probs", is_flag=True, help="Add the ten probabilities p0..p9 to each row.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
@click.option("--resume", is_flag=True, help="Keep the rows already in --out (CSV or JSONL) and score only the rest.")
@click.option("--frames", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Keep the 28 x 28 frame the model saw for each image in DIR (for digitscan review).")
@click.option("--field", is_flag=True,
              help="Each image is a field of several digits on one line: read them all, as `text`.")
@click.option("--digits", type=click.IntRange(1), default=None, metavar="N",
              help="With --field: each field holds N digits (implies --field).")
@click.option("--line-weights", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="PATH",
              help="With --field: the line reader's archive (fit --fields makes one). [default: the shipped one]")
@click.option("--every", type=click.IntRange(1), default=None, metavar="N",
              help="Videos: read every N-th frame. [default: every frame]")
@click.option("--fps", type=click.FloatRange(0, min_open=True), default=None, metavar="F",
              help="Videos: read about F frames a second instead.")
@click.option("--gpu-decode", is_flag=True,
              help="Decode plain JPEGs with nvJPEG and prepare them on the GPU instead of in the loader workers.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: decode and score on a Ray cluster (pip install 'digitscan[ray]').")
@click.option("--address", default=None, help="With --engine ray: the cluster to join. [default: start a local one]")
@click.option("--actors", type=click.IntRange(1), default=1, show_default=True,
              help="With --engine ray: model actors (each loads the model once).")
@click.option("--gpus-per-actor", type=click.FloatRange(0), default=0.0, show_default=True,
              help="With --engine ray: GPUs reserved by each model actor.")
def run(inputs: tuple[str, ...], out: str, fmt: str | None, recursive: bool, batch_size: int, workers: int | None,
        device: str, weights: Path | None, invert: Invert, probs: bool, quiet: bool, resume: bool, frames: Path | None,
        field: bool, digits: int | None, line_weights: Path | None, every: int | None, fps: float | None,
        gpu_decode: bool, engine: str, address: str | None, actors: int, gpus_per_actor: float) -> None:
    """Read the digit in each image of INPUT... and write one row per image.

    INPUT is any mix of folders (scanned for image and video files), image files, video files
    (each frame read is one row, named like clip.mp4#t=1.250; pip install "digitscan[video]"),
    and - (paths read from standard input, one per line). Results go to standard output unless
    --out names a file; progress, the summary and messages go to standard error.

    \b
    Examples:
      digitscan run scans/ --out results.csv
      find scans -name '*.png' | digitscan run - --format jsonl
      digitscan run scans/ -r --probs --out results.json
      digitscan run postcodes/ --digits 5 --format jsonl
      digitscan run clip.mp4 --fps 2 --format jsonl

    With --out FILE, the settings that shape the rows go in FILE.settings.json beside it, and
    --resume refuses to continue a file made with other columns, weights, --invert or
    video sampling.

    Exit status: 0 when every image was read, 1 when some could not be (the rest are still
    scored), 2 for usage and set-up errors.
    """
    from .inputs import check_inputs
    from .writers import check_field_format, check_output, pick_format

    fmt = pick_format(out, fmt)
    check_inputs(inputs)
    check_output(out, fmt, resume)
    field = field or digits is not None
    if every is not None and fps is not None:
        raise click.UsageError("--every and --fps both choose a video's frames: give one")
    if field:
        check_field_format(fmt, probs)
        if frames is not None:
            raise click.UsageError("--frames keeps single digits' frames; it does not go with --field")
    elif line_weights is not None:
        raise click.UsageError("--line-weights is the line reader's, which reads fields: add --field")

    with _importing():
        from rich.console import Console

        from .report import summary_table
        from .run import RunOptions
        from .run import run as run_job
        from .video import Sampling

    opts = RunOptions(out=out, fmt=fmt, recursive=recursive, batch_size=batch_size, workers=workers, device=device,
                      weights=weights, invert=invert, probs=probs, quiet=quiet, resume=resume,
                      engine=engine, address=address, actors=actors, gpus_per_actor=gpus_per_actor, frames=frames,
                      gpu_decode=gpu_decode, field=field, digits=digits, line_weights=line_weights,
                      sampling=Sampling(every or 1, fps))
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    outcome = run_job(list(inputs), opts)
    if not quiet:
        console.print(summary_table(outcome.tally, outcome.device, outcome.seconds, outcome.skipped))
    if outcome.interrupted:
        where = "" if out == "-" else f" in {out}; continue with --resume"
        console.print(f"interrupted: {outcome.tally.total:,} results kept{where}")
        sys.exit(INTERRUPTED)
    if outcome.tally.status["error"]:
        if quiet:
            console.print(f"{outcome.tally.status['error']} of {outcome.tally.total} images could not be read")
        sys.exit(SOME_UNREADABLE)


@main.command()
@click.option("--epochs", default=FIT_EPOCHS, show_default=True, type=click.IntRange(1), help="Passes over the data.")
@data_option
@click.option("--from", "start", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Fine-tune this archive. [default: the shipped weights]")
@click.option("--scratch", is_flag=True, help="Start from random weights instead of fine-tuning.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the TorchScript archive (and its .json card). "
                   "[default: digitscan.pt; lines.pt with --fields]")
@click.option("--batch-size", default=None, type=click.IntRange(1),
              help=f"[default: {FIT_BATCH}; {LINE_BATCH} with --fields]")
@click.option("--lr", default=None, type=click.FloatRange(min=0, min_open=True),
              help=f"Peak learning rate of the one-cycle schedule. [default: {FIT_LR}; {LINE_LR} with --fields]")
@device_option
@click.option("--seed", default=0, show_default=True, type=int, help="Makes a CPU run repeatable.")
@click.option("--resume", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Finish the fit that wrote this checkpoint, with its settings (only --device may change).")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Checkpoint path, written after every epoch. [default: OUT with .ckpt]")
@click.option("--limit", type=click.IntRange(1), default=None, help="Train on the first N training images only.")
@labeled_option
@click.option("--calibrate", type=click.IntRange(0), default=CALIBRATION_RENDERS, show_default=True, metavar="N",
              help="Fit the confidence temperature on N held-out digits rendered as scans (0: leave it at 1).")
@click.option("--teacher", "teachers", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              metavar="ARCHIVE", help="Also learn this archive's readings of each digit (distillation); "
              "repeat it to learn the mean of several.")
@click.option("--fields", "lines", is_flag=True,
              help="Train the line reader that reads fields (run --field) on fields written with MNIST's digits "
                   "(and with --labeled, your fields).")
def fit(epochs: int, data: Path | None, start: Path | None, scratch: bool, out: Path | None, batch_size: int | None,
        lr: float | None, device: str, seed: int, resume: Path | None, checkpoint: Path | None, limit: int | None,
        labeled: Path | None, calibrate: int, teachers: tuple[Path, ...], lines: bool) -> None:
    """Train or fine-tune the model on MNIST (and your labelled scans), or with --fields the line reader.

    \b
    Examples:
      digitscan fit --data ../shared/mnist --epochs 5 --out my.pt
      digitscan fit --labeled my_scans/ --epochs 2 --out tuned.pt
      digitscan fit --resume my.ckpt
      digitscan fit --scratch --teacher a.pt --teacher b.pt --epochs 30 --out student.pt
      digitscan fit --fields --epochs 2 --out my_lines.pt
    """
    from rich.console import Console

    from .fit import FitConfig, resumed_config
    from .fit import fit as run_fit
    from .linefit import LineFitConfig
    from .report import epochs_table
    from .trainingdata import default_data_root

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    if scratch and start:
        _fail("--from and --scratch exclude each other")
    if lines:
        ctx = click.get_current_context()
        digit_model_only = {"resume": "--resume", "checkpoint": "--checkpoint", "calibrate": "--calibrate",
                            "teachers": "--teacher"}
        unfit = [flag for name, flag in digit_model_only.items()
                 if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE]
        if unfit:
            _fail(f"--fields trains the line reader; {', '.join(unfit)} "
                  f"{'is' if len(unfit) == 1 else 'are'} for the digit model")
        _fit_lines(LineFitConfig(data=data or default_data_root(), out=out or Path(LINES_NAME), epochs=epochs,
                                 batch_size=batch_size or LINE_BATCH, lr=lr or LINE_LR, device=device, seed=seed,
                                 start=start, scratch=scratch, limit=limit, labeled=labeled,
                                 command=_command_line()), console)
        return
    if resume is not None:
        ctx = click.get_current_context()
        given = {name: value for name, value in ctx.params.items()
                 if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE and name not in {"resume", "device"}}
        cfg = resumed_config(resume, given, device)
    else:
        cfg = FitConfig(data=data or default_data_root(), out=out or Path(WEIGHTS_NAME), epochs=epochs,
                        batch_size=batch_size or FIT_BATCH, lr=lr or FIT_LR,
                        device=device, seed=seed, start=start, scratch=scratch, limit=limit, labeled=labeled,
                        command=_command_line(), checkpoint=checkpoint, calibrate=calibrate,
                        teachers=teachers)
    result = run_fit(cfg, log=console.print)
    if not result.main:
        sys.exit(INTERRUPTED if result.interrupted else 0)
    if result.history:
        console.print(epochs_table(result.history))
    if result.interrupted or result.card is None:
        sys.exit(INTERRUPTED)
    console.print(f"wrote {cfg.out} (MNIST test accuracy {result.card['mnist_test_accuracy']:.4f}, "
                  f"sha256 {result.card['sha256'][:12]}…)")


def _fit_lines(cfg: LineFitConfig, console: Console) -> None:
    """`fit --fields`: train the line reader, then say what was written."""
    from .linefit import fit_lines

    result = fit_lines(cfg, log=console.print)
    if result.card is not None:
        console.print(f"wrote {cfg.out} (holdout fields read exactly {result.card['holdout_fields_exact']:.4f}, "
                      f"sha256 {result.card['sha256'][:12]}…)")
    if result.interrupted:
        sys.exit(INTERRUPTED)


@main.command()
@click.argument("sources", nargs=-1, required=True, metavar="RESULTS | IMAGE...")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), default=Path("review.html"),
              show_default=True, help="The page to write.")
@click.option("--below", type=click.FloatRange(0, 1), default=None,
              help="Show readings whose confidence is below this. [default: the summary's threshold]")
@click.option("--all", "every", is_flag=True, help="Show every row, not only the doubtful ones.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Show at most N rows (the least sure first).")
@click.option("--frames", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="The frames that run --frames kept. [default: computed again from the scans]")
@click.option("--field", is_flag=True, help="Images given here are fields of several digits (a results file says so "
              "itself).")
@click.option("--digits", type=click.IntRange(1), default=None, metavar="N",
              help="With --field: each field holds N digits (implies --field).")
@weights_option
@device_option
def review(sources: tuple[str, ...], out: Path, below: float | None, every: bool, limit: int | None,
           frames: Path | None, field: bool, digits: int | None, weights: Path | None, device: str) -> None:
    """Write one HTML page of the readings to check, to correct them by keyboard.

    RESULTS is a file that digitscan run wrote (CSV, JSON or JSONL): the page shows its readings
    below --below, the least sure first, then its blank and error rows. Given images or folders
    instead, it reads them now and shows every one. Each tile shows the scan, the 28 x 28 frame the
    model saw, the reading and its ten probabilities. Type the right digit (x: not a digit, Enter:
    the reading is right), then download corrections.csv (path,label) for fit --labeled.

    The results of run --field (or images with --field) give a tile per field: the scan, the text,
    and each digit's frame and reading. Type the field's digits, then Enter.

    \b
    Examples:
      digitscan run scans/ --out results.csv --frames frames/
      digitscan review results.csv --frames frames/ --out review.html
      digitscan fit --labeled ~/Downloads/corrections.csv --out tuned.pt
      digitscan review scan.png
      digitscan run forms/ --field --out fields.csv && digitscan review fields.csv
    """
    with _importing():
        from .inputs import check_inputs
        from .report import LOW_CONFIDENCE
        from .review import ReviewOptions
        from .review import review as review_job

    check_inputs(sources)
    opts = ReviewOptions(sources=list(sources), out=out, below=LOW_CONFIDENCE if below is None else below, all=every,
                         limit=limit, frames=frames, weights=weights, device=device, field=field, digits=digits)
    outcome = review_job(opts)
    if outcome.warning:
        click.echo(f"digitscan: warning: {outcome.warning}", err=True)
    click.echo(f"wrote {outcome.out}: {outcome.shown:,} of {outcome.rows:,} rows to check", err=True)


@main.command("eval")
@weights_option
@data_option
@labeled_option
@device_option
@workers_option
def evaluate(weights: Path | None, data: Path | None, labeled: Path | None, device: str, workers: int | None) -> None:
    """Print accuracy, a confusion matrix and calibration, on MNIST's test split or (with --labeled) your own scans.

    Calibration: readings grouped by confidence, each group's accuracy beside it, and the expected
    calibration error (the gap between the two, weighted by the group's share of readings).

    \b
    Examples:
      digitscan eval --data ../shared/mnist
      digitscan eval --labeled my_scans/ --weights tuned.pt
    """
    with _importing():
        from rich.console import Console

        from .evaluate import EvalOptions
        from .evaluate import evaluate as evaluate_job
        from .report import confusion_table, reliability_table
        from .trainingdata import default_data_root

    opts = EvalOptions(data=data or default_data_root(), labeled=labeled, weights=weights, device=device,
                       workers=workers)
    result = evaluate_job(opts)
    console = Console(highlight=False, soft_wrap=True)
    console.print(confusion_table(result.confusion, result.name))
    console.print(reliability_table(result.reliability, result.calibration_error))
    unread = f", {result.unread} blank or unreadable" if result.unread else ""
    console.print(f"accuracy {result.accuracy:.4f} on {result.total:,} {result.unit}{unread}; "
                  f"expected calibration error {result.calibration_error:.4f}")


@main.command()
@click.argument("source", default="0")
@click.option("--show", is_flag=True, help="Open a window with the frame, the digit's box and the reading.")
@click.option("--steady", type=click.IntRange(1), default=WATCH_STEADY, show_default=True, metavar="N",
              help="Frames in a row a new reading must hold before it is printed.")
@invert_option
@weights_option
@device_option
def watch(source: str, show: bool, steady: int, invert: Invert, weights: Path | None, device: str) -> None:
    """Read digits live from a camera, a video file or a stream, printing a JSONL line each time the
    reading changes.

    SOURCE is a camera index (0, the default, is the first camera), a video file or a stream URL
    (rtsp://, http://...); pip install "digitscan[video]". Each line holds the time in seconds (in
    the video, or since the first frame), the digit, its confidence and the status (ok or blank).
    With --show, a window shows each frame with the digit's box and the reading; q or Escape in it,
    or Ctrl-C, ends the watch and releases the camera. A file ends the watch at its end (with
    --show it plays at its own speed; without, as fast as it decodes).

    \b
    Examples:
      digitscan watch --show
      digitscan watch clip.mp4
      digitscan watch rtsp://192.168.1.20/stream | jq -r .digit

    Exit status: 0 at the end of the file or when the window is closed, 2 when there is no such
    camera, file or display or the video extra is missing, 130 after Ctrl-C.
    """
    import json

    with _importing():
        from .watch import Seen, WatchOptions
        from .watch import watch as watch_job

    def emit(seen: Seen) -> None:
        click.echo(json.dumps(seen.row()))
        sys.stdout.flush()

    opts = WatchOptions(source=source, weights=weights, device=device, invert=invert, steady=steady,
                        paced=show)
    window = None
    if show:
        from .window import show as show_window

        window = show_window(f"digitscan watch {source}")
    if watch_job(opts, emit, window):
        sys.exit(INTERRUPTED)
