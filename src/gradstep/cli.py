"""The ``gradstep`` command: argument parsing only; the work is done by the library.

Exit status: 0 success; 2 bad input (config, data, model, checkpoint) with one line on stderr
naming what and where, and no traceback; 1 an internal error, or a checkpoint that could not be
saved (disk full, permission denied: one line naming the path); 130 interrupted by SIGINT
(Ctrl-C), 143 by SIGTERM (a cluster's pre-emption): a first signal during fit stops after the
step under way, with a checkpoint, ``summary.json`` and the command that continues (see
:mod:`gradstep.interrupt`); a second stops at once.

    gradstep fit [CONFIG.toml] [--set section.key=value ...] [--nproc N]
    gradstep resume RUN_DIR [--force] [--code-dir DIR] [--trust-code] [--set ...] [--nproc N]
    gradstep eval CHECKPOINT [--data FILE] [--code-dir DIR] [--trust-code]
    gradstep predict CHECKPOINT INPUT --out FILE [--code-dir DIR] [--trust-code]
    gradstep export CHECKPOINT --format pt2|torchscript [--out FILE] [--code-dir DIR] [--trust-code]
    gradstep convert LEGACY.pt --model NAME [--set model.args.KEY=VALUE ...] --out DIR

CHECKPOINT is a checkpoint directory, ``.../checkpoints/best`` or ``latest``, or a run directory
(its best checkpoint). Nothing is ever unpickled, except by ``convert``, through
``torch.load(weights_only=True)``. Code a checkpoint or a run directory names is imported only
under the trust rule of :mod:`gradstep.trust` (``--code-dir``, ``--trust-code``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gradstep.errors import UserError, first_line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's usage errors are bad input too: exit 2
        self.print_usage(sys.stderr)
        print(f"gradstep: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from gradstep import __version__

    parser = _Parser(
        prog="gradstep", description="Train PyTorch models, the classic loop done right."
    )
    parser.add_argument("--version", action="version", version=f"gradstep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    fit = sub.add_parser(
        "fit",
        help="train a model (no config: the built-in example, digits + MLP)",
        description="Train what CONFIG.toml names; with no config, the built-in default example.",
    )
    fit.add_argument("config", nargs="?", help="a TOML config file (every key has a default)")
    _add_set(fit)
    _add_nproc(fit)

    resume = sub.add_parser(
        "resume",
        help="continue a run from its newest good checkpoint",
        description="Continue RUN_DIR from its newest checkpoint that verifies, exactly as if it "
        "had never stopped. --set changes a setting from the checkpoint's step on and records "
        "it (config.toml, summary.json's changes); a setting that would change what the run "
        "is, is refused.",
        epilog=_changeable_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    resume.add_argument("run_dir", help="the run directory (runs/NAME)")
    resume.add_argument(
        "--force", action="store_true", help="resume even if the model, batch or data differ"
    )
    _add_code(resume)
    _add_set(resume)
    _add_nproc(resume)

    ev = sub.add_parser("eval", help="loss and metrics of a checkpoint on a dataset")
    ev.add_argument("checkpoint", help="a checkpoint, best/latest, or a run directory")
    ev.add_argument("--data", help="csv / npz / IDX file with labels (default: the run's val data)")
    ev.add_argument("--batch-size", type=_positive, default=256)
    ev.add_argument("--device", default="cpu")
    _add_code(ev)

    pr = sub.add_parser("predict", help="batch inference (eval mode, no gradients) to a CSV file")
    pr.add_argument("checkpoint", help="a checkpoint, best/latest, or a run directory")
    pr.add_argument("input", help="csv / npz / npy / IDX file, or an MNIST folder")
    pr.add_argument("--out", required=True, help="the CSV file to write (atomically)")
    pr.add_argument("--batch-size", type=_positive, default=256)
    pr.add_argument("--device", default="cpu")
    _add_code(pr)

    ex = sub.add_parser("export", help="a model file that runs with plain PyTorch")
    ex.add_argument("checkpoint", help="a checkpoint, best/latest, or a run directory")
    ex.add_argument("--format", required=True, choices=["pt2", "torchscript"])
    ex.add_argument("--out", help="the file to write (default: <checkpoint>.pt2 / .torchscript.pt)")
    ex.add_argument("--input-shape", type=_shape, help="one sample's shape, e.g. 1,28,28")
    _add_code(ex)

    rp = sub.add_parser(
        "report", help="plots and a self-contained report.html for a run (readable offline)"
    )
    rp.add_argument("run_dir", help="the run directory (runs/NAME)")
    rp.add_argument("--out", help="the HTML file to write (default: RUN_DIR/report.html)")

    cp = sub.add_parser("compare", help="overlay runs' curves in one figure and tabulate them")
    cp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="two or more run directories")
    cp.add_argument("--out", default="compare.png", help="the figure (default: compare.png)")

    lb = sub.add_parser("lab", help="run a textbook experiment (no name: list them)")
    lb.add_argument("name", nargs="?", help="batchnorm, gd-variants, accumulation, lr-schedules")
    lb.add_argument("--out", help="the folder for its plot and table (default: runs/lab-NAME)")

    dg = sub.add_parser(
        "diagnose",
        help="a plain-language verdict on a run: under/overfitting, instability, BN pitfalls",
    )
    dg.add_argument("run_dir", help="the run directory (runs/NAME)")

    cv = sub.add_parser(
        "convert",
        help="import a trusted torch.save state_dict (weights_only loading) as a checkpoint",
    )
    cv.add_argument("legacy", help="a .pt / .pth file holding a plain state_dict")
    cv.add_argument("--model", required=True, help="the model name or file.py:Class")
    cv.add_argument("--out", required=True, help="the checkpoint directory to create")
    cv.add_argument("--input-shape", type=_shape, help="one sample's shape, e.g. 1,28,28")
    cv.add_argument("--task", default="multiclass", choices=["multiclass", "binary", "regression"])
    _add_set(cv)
    return parser


def _changeable_epilog() -> str:
    from gradstep.checkpoint.changes import CHANGEABLE

    width = max(len(k) for k in CHANGEABLE)
    lines = [f"  {key:<{width}}  {what}" for key, what in CHANGEABLE.items()]
    return (
        "settings --set may change on resume:\n"
        + "\n".join(lines)
        + "\nthe model, data, batches (batch_size, accumulate, drop_last, shuffle) and seed"
        "\nchange only with --force; the optimizer's other settings, the schedule, the loss"
        "\nand the monitors of early stopping and checkpoints never do"
    )


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config key, e.g. --set train.batch_size=full "
        "--set model.args.hidden=[64,32]",
    )


def _add_nproc(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--nproc",
        type=_positive,
        metavar="N",
        help="train on N processes of this machine (torchrun's elastic agent; [dist] "
        "max_restarts restarts failed workers, each resuming from the newest checkpoint)",
    )


def _launched(args: argparse.Namespace, command: list[str], config: Path | None) -> int | None:
    """``--nproc N`` (N > 1): check the config here, then run ``command`` on N processes and
    return their exit status; None: run in this process."""
    if not args.nproc or args.nproc == 1:
        return None
    from gradstep.config import load_config
    from gradstep.launch import launch

    cfg = load_config(config, list(args.overrides))  # bad settings: exit 2 before any process
    for override in args.overrides:
        command += ["--set", override]
    return launch(command, args.nproc, cfg.dist.max_restarts)


def _add_code(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--code-dir",
        help="the folder holding a file.py:Class model's code (default: the working directory)",
    )
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="import any module or file the checkpoint or run names (only for checkpoints you "
        "trust as you trust code; see README: what a checkpoint can and cannot do)",
    )


def _warn(message: str) -> None:
    print(f"gradstep: warning: {message}", file=sys.stderr)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return value


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected sizes like 1,28,28") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive sizes like 1,28,28")
    return shape


def _fit(args: argparse.Namespace) -> int:
    launched = _launched(args, ["fit", *([args.config] if args.config else [])], args.config)
    if launched is not None:
        return launched
    from gradstep.trainer import Trainer

    Trainer.from_config(args.config, args.overrides).fit()
    return 0


def _report(args: argparse.Namespace) -> int:
    from gradstep.logging.report import write_report

    print(f"wrote {write_report(args.run_dir, args.out)}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from rich.console import Console

    from gradstep.logging.compare import compare_runs
    from gradstep.logging.console import print_table

    path, rows = compare_runs(args.run_dirs, args.out)
    print_table(Console(), "gradstep compare", rows)
    print(f"wrote {path}")
    return 0


def _lab(args: argparse.Namespace) -> int:
    from rich.console import Console

    from gradstep.lab import EXPERIMENTS, run_lab
    from gradstep.logging.console import print_table

    if args.name is None:
        print("gradstep lab NAME runs one of:")
        for e in EXPERIMENTS.values():
            print(f"  {e.name:<13} {e.about}")
        return 0
    out = args.out or f"runs/lab-{args.name}"
    print(
        f"gradstep lab {args.name}: {EXPERIMENTS[args.name].about}"
        if args.name in EXPERIMENTS
        else "",
        end="\n" if args.name in EXPERIMENTS else "",
    )
    rows = run_lab(args.name, out)
    print_table(Console(), f"gradstep lab {args.name}", rows)
    print(f"wrote {out}/{args.name}.png and {out}/{args.name}.md")
    return 0


def _diagnose(args: argparse.Namespace) -> int:
    from gradstep.diagnose import diagnose_run, format_verdicts

    print(format_verdicts(diagnose_run(args.run_dir)))
    return 0


def _resume(args: argparse.Namespace) -> int:
    from gradstep.checkpoint.files import CheckpointError
    from gradstep.trainer import Trainer
    from gradstep.trust import CodeTrust

    run_dir = Path(args.run_dir)
    config = run_dir / "config.toml"
    if not config.is_file():
        from gradstep.checkpoint.load import open_checkpoint

        if run_dir.is_file() or not run_dir.exists():
            open_checkpoint(run_dir)  # the clear refusal for a pickle or a missing path
        raise CheckpointError(f"{run_dir}: not a run directory (no config.toml)")
    flags = ["--force"] * args.force + ["--trust-code"] * args.trust_code
    flags += ["--code-dir", args.code_dir] if args.code_dir else []
    launched = _launched(args, ["resume", str(run_dir), *flags], config)
    if launched is not None:
        return launched
    trainer = Trainer.from_config(config, args.overrides)
    # the run's config and checkpoints are data: code they name is imported only under the
    # trust rule, and base_dir comes from the checkpoint the resume verifies (see Trainer.fit)
    trainer.code_trust = CodeTrust.make(
        args.code_dir, args.trust_code, (run_dir,), "the run's config and checkpoint"
    )
    trainer.base_dir, trainer.default_name = None, None
    if trainer.config.data.source == "(python)":
        raise UserError(
            f"{run_dir}: this run trained on in-memory data; resume it from Python: "
            f"Trainer(...).fit(model, train, resume={str(run_dir)!r})"
        )
    trainer.fit(resume=run_dir, force=args.force)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from gradstep.inference import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        batch_size=args.batch_size,
        device=args.device,
        code_dir=args.code_dir,
        trust_code=args.trust_code,
        warn=_warn,
        say=print,
    )
    for key, value in metrics.items():
        print(f"{key}: {value:.2%}" if key == "acc" else f"{key}: {value:.6g}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from rich.console import Console

    from gradstep.inference import predict_file

    n = predict_file(
        args.checkpoint,
        args.input,
        args.out,
        batch_size=args.batch_size,
        device=args.device,
        console=Console(stderr=True),
        code_dir=args.code_dir,
        trust_code=args.trust_code,
        warn=_warn,
    )
    print(f"wrote {n} predictions to {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from gradstep.export import export_checkpoint

    path = export_checkpoint(
        args.checkpoint,
        args.format,
        args.out,
        args.input_shape,
        code_dir=args.code_dir,
        trust_code=args.trust_code,
        warn=_warn,
    )
    print(f"wrote {path} (and {path.name}.json: input, outputs, how to load)")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from gradstep.checkpoint.convert import convert_legacy
    from gradstep.config import parse_override

    model_args = {}
    for text in args.overrides:
        path, value = parse_override(text)
        if path[:2] != ["model", "args"] or len(path) != 3:
            raise UserError(f"--set {text!r}: convert takes only model.args.KEY=VALUE")
        model_args[path[2]] = value
    out = convert_legacy(
        args.legacy,
        args.model,
        model_args,
        args.out,
        input_shape=args.input_shape,
        task=args.task,
        base_dir=Path.cwd(),
    )
    print(f"wrote checkpoint {out}")
    return 0


COMMANDS = {
    "fit": _fit,
    "resume": _resume,
    "eval": _eval,
    "predict": _predict,
    "export": _export,
    "convert": _convert,
    "diagnose": _diagnose,
    "report": _report,
    "compare": _compare,
    "lab": _lab,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from gradstep import dist
    from gradstep.checkpoint.files import SaveError
    from gradstep.errors import NonFiniteError

    try:
        return COMMANDS[args.command](args)
    except UserError as err:
        # under torchrun every rank meets bad settings or data alike: rank 0 says it (a rank
        # that met one alone exits 2 too, and --nproc names it)
        if dist.rank() == 0:
            print(f"gradstep: error: {err}", file=sys.stderr)
        return 2
    except (SaveError, NonFiniteError) as err:
        if dist.rank() == 0:
            print(f"gradstep: error: {err}", file=sys.stderr)
        return 1
    except RuntimeError as err:
        import torch

        line = dist.collective_failure(err)
        if line is not None:  # a timed-out collective, a rank that died mid-way: one line
            print(f"gradstep: error: {line}", file=sys.stderr)
            return 1
        if not isinstance(err, torch.OutOfMemoryError):
            raise
        first = first_line(err, "out of memory")
        print(
            f"gradstep: error: {first}; lower [train] batch_size, or set "
            '[train] on_oom = "fallback" to halve micro-batches and keep the effective batch',
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt as err:  # SIGINT 130, SIGTERM 143 (gradstep.interrupt)
        from gradstep.interrupt import Interrupted

        if isinstance(err, Interrupted):
            print(f"gradstep: {err}", file=sys.stderr)
            return err.exit_code
        print("gradstep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
