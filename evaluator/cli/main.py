"""`pricer`: evaluate, rank and use a fine-tuned pricer's checkpoints from the command line.

The CLI translates flags into one call on the service's facade (or the trainer) and prints
the answer; it decides nothing itself. One module per group of subcommands.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence

from pricer.evaluator.cli import evaluating, serving, training
from pricer.evaluator.errors import PricerError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pricer", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = parser.add_subparsers(dest="command", required=True)
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
    except PricerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
