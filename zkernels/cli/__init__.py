"""Command line: `zkernels rerank | index build | index search | demo ...`.

Each command family is one module exposing `add_parser(subparsers)`, which registers its subcommand(s)
and sets `func(args) -> exit status` on each; COMMANDS lists the modules in the order `zkernels --help`
shows them. A new command (`serve`, `rerank-dataset`, ...) is a new module added to that list.

Exit status: 0 done; 2 a wrong command line (argparse's usage errors, and UsageError for arguments that
cannot work together), found before any model loads; 1 the command failed (a bad file, checkpoint or
input) with one line `zkernels: error: ...` on stderr and no traceback; 141 stdout closed early
(`... | head`), quietly, as for a Unix tool ended by SIGPIPE. An unexpected exception (a bug) is one
line too, naming its type; ZKERNELS_DEBUG=1 shows the traceback of any error instead.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from . import check, dataset, demo, index, quantize, rerank, serve
from .messages import UsageError, cli_warnings, print_error

COMMANDS = [rerank, index, serve, dataset, demo, quantize, check]
# Bad input, files and checkpoints raise these (CheckpointError is a ValueError): their message is the
# whole story. Any other exception is a bug in zkernels, reported with its type.
RUNTIME_ERRORS = (ValueError, TypeError, OSError, RuntimeError)
DEBUG_ENV = "ZKERNELS_DEBUG"
EXIT_BROKEN_PIPE = 128 + int(getattr(signal, "SIGPIPE", 13))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("zkernels")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zkernels",
                                     description="Fast, exact scoring for Qwen3 rerankers and embedders")
    parser.add_argument("--version", action="version", version=f"zkernels {_version()}",
                        help="print the zkernels version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command `args` were parsed for, e.g. the one of `index build`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and getattr(args, action.dest, None) in action.choices:
            return command_parser(action.choices[getattr(args, action.dest)], args)
    return parser


def _quiet_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the flush at interpreter exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (captured, closed)
        pass


def main(argv=None) -> int:
    try:
        status = _run(argv)
        sys.stdout.flush()  # here, not at interpreter exit, so a closed pipe is handled below
        return status
    except BrokenPipeError:  # `zkernels ... | head`: the reader left; stop quietly
        _quiet_stdout()
        return EXIT_BROKEN_PIPE


def _run(argv) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version (0) and usage errors (2): a status, not an exception
        return e.code if isinstance(e.code, int) else 2
    this = command_parser(parser, args)
    flags = {flag for action in this._actions for flag in action.option_strings}
    try:
        with cli_warnings(flags):
            status = args.func(args)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        raise
    except UsageError as e:
        this.print_usage(sys.stderr)
        print(f"{this.prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 128 + int(signal.SIGINT)
    except Exception as e:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        if isinstance(e, RUNTIME_ERRORS):
            print_error(str(e), flags)
        else:
            print_error(f"unexpected {type(e).__name__}: {e} (a bug in zkernels? {DEBUG_ENV}=1 shows the "
                        f"traceback)", flags)
        return 1


if __name__ == "__main__":
    sys.exit(main())
