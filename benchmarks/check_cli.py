"""Checks a benchmark's command line without running the benchmark, for `run_gpu.sh --dry-run`.

    python benchmarks/check_cli.py [--require PATH ...] -- SCRIPT [FLAGS ...]

SCRIPT runs as `python SCRIPT FLAGS` would, up to its argparse call, which then stops it: a renamed or
removed flag (or a bad value) fails here, in CI, instead of on the next GPU run. --require names files
the run will read (e.g. a model shape), which must exist.
"""
from __future__ import annotations

import argparse
import os
import runpy
import sys


class _Parsed(Exception):
    def __init__(self, namespace):
        super().__init__("parsed")
        self.namespace = namespace


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    required = []
    while len(argv) >= 2 and argv[0] == "--require":
        required.append(argv[1])
        argv = argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    missing = [p for p in required if not os.path.exists(p)]
    if missing:
        print(f"check_cli: missing file(s) the run needs: {', '.join(missing)}", file=sys.stderr)
        return 1
    script, flags = argv[0], argv[1:]
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))  # a bad flag exits 2 with argparse's own message

    argparse.ArgumentParser.parse_args = parse_then_stop
    saved_argv = sys.argv
    sys.argv = [script] + flags
    try:
        runpy.run_path(script, run_name="__main__")
    except _Parsed as parsed:
        print(f"check_cli: {script} accepts its command line: {vars(parsed.namespace)}")
        return 0
    finally:
        argparse.ArgumentParser.parse_args = original
        sys.argv = saved_argv
    print(f"check_cli: {script} ended without parsing a command line", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
