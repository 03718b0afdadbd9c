"""`pricer`: evaluate, rank and use a fine-tuned pricer's checkpoints from the command line.

The CLI translates flags into one call on the service's facade (or the trainer) and prints
the answer; it decides nothing itself. One module per group of subcommands.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Sequence

from pricer.evaluator.cli import evaluating, serving, training
from pricer.evaluator.errors import PricerError


class Parser(argparse.ArgumentParser):
    """argparse, strict: an option is spelt out in full (`--al` is not taken for `--all`), and a misspelt one is
    reported with the usage of the subcommand it was given to, not the top level's."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pricer", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in (evaluating, serving, training):
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # keep the output to pricer's own table and progress bar
        import transformers

        transformers.utils.logging.disable_progress_bar()
        warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        args.run(args)
    except PricerError as exc:  # with --json, an object a script can read: the error's kind and its sentence
        error = {"error": type(exc).__name__, "detail": str(exc)}
        print(json.dumps(error) if getattr(args, "json", False) else f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
