"""The ``gradstep`` command: argument parsing only; the work is done by the library.

Exit status: 0 success; 2 bad input (config, data, model) with one line on stderr naming what and
where, and no traceback; 1 an internal error; 130 interrupted (Ctrl-C).

    gradstep fit [CONFIG.toml] [--set section.key=value ...]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gradstep.errors import UserError


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
    fit.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config key, e.g. --set train.batch_size=full "
        "--set model.args.hidden=[64,32]",
    )
    return parser


def _fit(args: argparse.Namespace) -> int:
    from gradstep.trainer import Trainer

    Trainer.from_config(args.config, args.overrides).fit()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return {"fit": _fit}[args.command](args)
    except UserError as err:
        print(f"gradstep: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gradstep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
