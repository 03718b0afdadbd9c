"""`pricer`: evaluate, rank and use a fine-tuned pricer's checkpoints from the command line.

The CLI translates flags into one call on the service's facade (or the trainer) and prints
the answer; it decides nothing itself. One module per group of subcommands.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from pricer import __version__
from pricer.evaluator.cli import comparing, evaluating, serving, training
from pricer.evaluator.errors import PricerError

# Exit statuses: a script tells a mistake in its own command line (2) from a refusal of pricer's (1).
EXIT_OK = 0
EXIT_ERROR = 1  # pricer's own error (a PricerError), told in one line on stderr
EXIT_USAGE = 2  # a usage error, argparse's and POSIX's convention
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command Ctrl-C ended
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports `yes | head`: the output was cut short
EXIT_STATUSES = {
    EXIT_OK: "done",
    EXIT_ERROR: "pricer's error, in one line on stderr (with --json, a JSON object): a missing repo or run folder, "
    "an unknown revision, an unusable adapter, broken data, nothing evaluated yet, the Hub out of reach",
    EXIT_USAGE: "a usage error: an unknown or misspelt option, a missing or malformed argument",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_BROKEN_PIPE: "the output's reader stopped reading (`pricer ... | head`); nothing more is printed",
}


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

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_verbosity(parser: argparse.ArgumentParser, default: str | None) -> None:
    """-v and -q, taken before and after the subcommand; the last one given wins (`pricer -q best RUN -v` is verbose)."""
    parser.add_argument(
        "-v", "--verbose", dest="verbosity", action="store_const", const="verbose", default=default,
        help="log what happens (of -v and -q, the last one given wins)",
    )
    parser.add_argument(
        "-q", "--quiet", dest="verbosity", action="store_const", const="quiet", default=default,
        help="errors only: no progress bars, warnings or log lines (the command's output stays)",
    )


def build_parser() -> argparse.ArgumentParser:
    statuses = "\n".join(f"  {code:<4} {words}" for code, words in EXIT_STATUSES.items())
    parser = Parser(
        prog="pricer",
        description=__doc__.split("\n\n")[0],
        epilog=f"exit status:\n{statuses}",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keeps the epilog's one status a line
    )
    parser.add_argument("--version", action="version", version=f"pricer {__version__}", help="print pricer's version and exit")
    _add_verbosity(parser, default=None)
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=Parser, metavar="COMMAND", help="`pricer COMMAND --help` tells its options"
    )
    for group in (evaluating, comparing, serving, training):
        group.add_commands(commands)
    for command in dict.fromkeys(commands.choices.values()):  # given after the subcommand, only then does it override
        _add_verbosity(command, default=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a reader gone early (`| head`) shows here, where it is handled, not at exit
    except BrokenPipeError:
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    args.verbose, args.quiet = args.verbosity == "verbose", args.verbosity == "quiet"
    level = logging.INFO if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # keep the output to pricer's own table and progress bar
        import transformers

        transformers.utils.logging.disable_progress_bar()
        warnings.filterwarnings("ignore", category=FutureWarning)
    if args.quiet:  # and not even those: the libraries' warnings and download bars go too (pricer's own: `progress`)
        import huggingface_hub
        import transformers

        transformers.utils.logging.set_verbosity_error()
        huggingface_hub.utils.disable_progress_bars()
        warnings.simplefilter("ignore")
    try:
        args.run(args)
    except PricerError as exc:  # with --json, an object a script can read: the error's kind and its sentence
        error = {"error": type(exc).__name__, "detail": str(exc)}
        print(json.dumps(error) if getattr(args, "json", False) else f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        if exc.filename is None:  # not a file a flag named: a fault of pricer's, with its traceback
            raise
        reason = PricerError(f"cannot use {exc.filename}: {exc.strerror or exc}")  # an unwritable --output, a full disk
        error = {"error": type(exc).__name__, "detail": str(reason)}
        print(json.dumps(error) if getattr(args, "json", False) else f"error: {reason}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so that Python's own flush at exit has nowhere to fail (the recipe of the
    `signal` module's documentation; not SIGPIPE's default action, which would also end `pricer serve` when a
    client's socket breaks)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no file behind stdout (a test's capture): nothing is left to flush at exit
        pass


if __name__ == "__main__":
    sys.exit(main())
