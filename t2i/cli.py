"""The `t2i` command: each subcommand parses its flags and calls one package function.

Subcommand groups live beside the code they drive (`t2i/data/cli.py`, `t2i/training/cli.py`, ...)
and expose `add_parser(subparsers)`; this file only wires them together. Heavy imports (torch,
transformers) happen inside the command functions, so `t2i --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="t2i",
        description="Text-to-image diffusion: generate, train, evaluate.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_data(sub)
    return parser


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="build, pack and inspect data sets")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    from t2i.data import cli as data_cli
    from t2i.data import emoji

    data_cli.add_parser(data_sub)
    emoji.add_parser(data_sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"t2i {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
