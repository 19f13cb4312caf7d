"""The `digitscan` command line. Heavy imports (torch) happen inside commands, so --help stays fast."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

DEVICE_HELP = "auto (CUDA when there is one), cpu, cuda or cuda:N."


def _fail(message: str, code: int = 2) -> None:
    """One line on standard error, no traceback, then exit."""
    click.echo(f"digitscan: {message}", err=True)
    sys.exit(code)


class _Main(click.Group):
    """The command group; keeps the raw arguments so `fit` can record its exact command line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["digitscan.argv"] = list(args)
        return super().parse_args(ctx, args)


def _command_line() -> str:
    return shlex.join(["digitscan", *click.get_current_context().meta.get("digitscan.argv", [])])


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="digitscan")
def main() -> None:
    """Read handwritten digits from folders of scanned images."""


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--out", "-o", default="-", show_default=True, metavar="PATH",
              help="Results file (.csv, .json or .jsonl); - for standard output.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "jsonl"]), default=None,
              help="Output format. [default: from --out's extension, else csv]")
@click.option("--recursive", "-r", is_flag=True, help="Also scan subfolders.")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1))
@click.option("--workers", type=click.IntRange(0), default=None,
              help="Decoding processes (0 decodes in the main process). [default: one per core]")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="A TorchScript archive to use instead of the shipped weights.")
@click.option("--invert", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True,
              help="yes: dark ink on light paper; no: light ink on dark; auto: decide per image.")
@click.option("--probs", is_flag=True, help="Add the ten probabilities p0..p9 to each row.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
@click.option("--resume", is_flag=True, help="Keep the rows already in --out (CSV or JSONL) and score only the rest.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: decode and score on a Ray cluster (pip install 'digitscan[ray]').")
@click.option("--address", default=None, help="With --engine ray: the cluster to join. [default: start a local one]")
@click.option("--actors", type=click.IntRange(1), default=1, show_default=True,
              help="With --engine ray: model actors (each loads the model once).")
@click.option("--gpus-per-actor", type=click.FloatRange(0), default=0.0, show_default=True,
              help="With --engine ray: GPUs reserved by each model actor.")
def run(inputs: tuple[str, ...], out: str, fmt: str | None, quiet: bool, **options: object) -> None:
    """Read the digit in each image of INPUT... and write one row per image.

    INPUT is any mix of folders (scanned for image files), image files, and - (paths read from
    standard input, one per line). Results go to standard output unless --out names a file;
    progress, the summary and messages go to standard error.

    \b
    Examples:
      digitscan run scans/ --out results.csv
      find scans -name '*.png' | digitscan run - --format jsonl
      digitscan run scans/ -r --probs --out results.json

    Exit status: 0 when every image was read, 1 when some could not be (the rest are still
    scored), 2 for usage and set-up errors.
    """
    from .inputs import InputError, check_inputs
    from .writers import OutputError, check_output, pick_format

    fmt = pick_format(out, fmt)
    try:
        check_inputs(inputs)
        check_output(out, fmt, bool(options["resume"]))
    except (InputError, OutputError) as exc:
        _fail(str(exc))

    from rich.console import Console

    from .devices import DeviceError
    from .model import WeightsError
    from .ray_engine import EngineUnavailable
    from .report import summary_table
    from .run import RunOptions
    from .run import run as run_job

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        outcome = run_job(list(inputs), RunOptions(out=out, fmt=fmt, quiet=quiet, **options))  # type: ignore[arg-type]
    except (WeightsError, DeviceError, InputError, OutputError, EngineUnavailable) as exc:
        _fail(str(exc))
    if not quiet:
        console.print(summary_table(outcome.tally, outcome.device, outcome.seconds, outcome.skipped))
    if outcome.interrupted:
        where = "" if out == "-" else f" in {out}; continue with --resume"
        console.print(f"interrupted: {outcome.tally.total:,} results kept{where}")
        sys.exit(130)
    if outcome.tally.status["error"]:
        if quiet:
            console.print(f"{outcome.tally.status['error']} of {outcome.tally.total} images could not be read")
        sys.exit(1)


@main.command()
@click.option("--epochs", default=5, show_default=True, type=click.IntRange(1), help="Passes over the data.")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="torchvision MNIST root (downloaded there if missing). [default: ~/.cache/digitscan/mnist]")
@click.option("--from", "start", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Fine-tune this archive. [default: the shipped weights]")
@click.option("--scratch", is_flag=True, help="Start from random weights instead of fine-tuning.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("digitscan.pt"),
              show_default=True, help="Where to write the TorchScript archive (and its .json card).")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=3e-3, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Peak learning rate of the one-cycle schedule.")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--seed", default=0, show_default=True, type=int, help="Makes a CPU run repeatable.")
@click.option("--resume", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Continue from a checkpoint written by an earlier fit.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Checkpoint path, written after every epoch. [default: OUT with .ckpt]")
@click.option("--limit", type=click.IntRange(1), default=None, help="Train on the first N training images only.")
@click.option("--labeled", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Add your own labelled scans: a folder with subfolders 0 to 9.")
def fit(**options: object) -> None:
    """Train or fine-tune the model on MNIST (and your labelled scans).

    \b
    Examples:
      digitscan fit --data ../shared/mnist --epochs 5 --out my.pt
      digitscan fit --labeled my_scans/ --epochs 2 --out tuned.pt
      digitscan fit --resume my.ckpt
    """
    from rich.console import Console

    from .devices import DeviceError
    from .fit import FitConfig
    from .fit import fit as run_fit
    from .model import WeightsError
    from .report import epochs_table
    from .trainingdata import DataUnavailable, default_data_root

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    if options["scratch"] and options["start"]:
        _fail("--from and --scratch exclude each other")
    checkpoint = options.pop("checkpoint")
    cfg = FitConfig(data=options.pop("data") or default_data_root(), command=_command_line(),
                    **options)  # type: ignore[arg-type]
    if checkpoint is not None:
        cfg.checkpoint = checkpoint
    try:
        result = run_fit(cfg, log=console.print)
    except (DataUnavailable, WeightsError, DeviceError) as exc:
        _fail(str(exc))
    if not result.main:
        sys.exit(130 if result.interrupted else 0)
    if result.history:
        console.print(epochs_table(result.history))
    if result.interrupted or result.card is None:
        sys.exit(130)
    console.print(f"wrote {cfg.out} (MNIST test accuracy {result.card['mnist_test_accuracy']:.4f}, "
                  f"sha256 {result.card['sha256'][:12]}…)")


@main.command("eval")
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="Archive to evaluate. [default: the shipped weights]")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="torchvision MNIST root; scores the test split. [default: ~/.cache/digitscan/mnist]")
@click.option("--labeled", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Score your own scans instead: a folder with subfolders 0 to 9.")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--workers", type=click.IntRange(0), default=None, help="Decoding processes for --labeled.")
def evaluate(weights: Path | None, data: Path | None, labeled: Path | None, device: str, workers: int | None) -> None:
    """Print accuracy and a confusion matrix, on MNIST's test split or on your own labelled scans.

    \b
    Examples:
      digitscan eval --data ../shared/mnist
      digitscan eval --labeled my_scans/ --weights tuned.pt
    """
    from rich.console import Console

    from .devices import DeviceError
    from .evaluate import evaluate_folder, evaluate_mnist
    from .model import WeightsError
    from .report import confusion_table
    from .trainingdata import DataUnavailable, default_data_root

    try:
        if labeled is not None:
            result = evaluate_folder(labeled, weights, device, workers=workers)
        else:
            result = evaluate_mnist(data or default_data_root(), weights, device)
    except (DataUnavailable, WeightsError, DeviceError) as exc:
        _fail(str(exc))
    console = Console(highlight=False, soft_wrap=True)
    console.print(confusion_table(result.confusion, result.name))
    unread = f", {result.unread} blank or unreadable" if result.unread else ""
    console.print(f"accuracy {result.accuracy:.4f} on {result.total:,} images{unread}")
