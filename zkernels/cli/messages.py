"""What the command line prints when something goes wrong: the library's messages in the CLI's terms.

The library's errors and warnings name Python arguments (`format='zerank'`, `max_length=512`,
`truncate=False`). A command-line user has flags, so the message is rewritten to name the flag of the
running command (`--format zerank`, `--max-length 512`, `--no-truncate`); a parameter the command has no
flag for is left as it is.
"""
from __future__ import annotations

import contextlib
import re
import sys
import warnings
from pathlib import Path

PREFIX = "zkernels"
_PACKAGE_DIR = Path(__file__).resolve().parent.parent
# An API parameter with its value: `max_length=512`, `format='zerank'`, `truncate=False`; or a bare
# parameter name with an underscore (`raise max_length`), which plain English words do not have.
_PARAM = re.compile(r"\b([a-z][a-z_]*)=('[^']*'|\"[^\"]*\"|[\w.+-]+)|\b([a-z]+(?:_[a-z]+)+)\b")


class UsageError(Exception):
    """Arguments that cannot work together: reported like argparse's own errors (usage, exit status 2)."""


def to_cli_terms(message: str, flags: set[str]) -> str:
    """`message` with API parameters that have a flag among `flags` written as that flag."""
    def flag_for(match: re.Match) -> str:
        if match.group(3):  # a bare name
            flag = "--" + match.group(3).replace("_", "-")
            return flag if flag in flags else match.group(0)
        name, value = match.group(1), match.group(2).strip("'\"")
        flag = "--" + name.replace("_", "-")
        if name == "truncate" and "--no-truncate" in flags:
            return "--no-truncate" if value == "False" else "without --no-truncate"
        if flag not in flags:
            return match.group(0)
        return f"{flag} {value}"
    if "--no-truncate" in flags:
        message = message.replace("pass truncate=True", "leave out --no-truncate")
    return _PARAM.sub(flag_for, message)


def print_error(message: str, flags: set[str]) -> None:
    """One line on stderr: `zkernels: error: ...`."""
    text = " ".join(to_cli_terms(str(message), flags).split())
    print(f"{PREFIX}: error: {text}", file=sys.stderr)


def note(message: str) -> None:
    print(f"{PREFIX}: note: {message}", file=sys.stderr)


@contextlib.contextmanager
def cli_warnings(flags: set[str]):
    """zkernels' own warnings become one `zkernels: warning: ...` line in CLI terms (no source line);
    other libraries' warnings show as Python shows them."""
    with warnings.catch_warnings():
        default_show = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, UserWarning) and Path(filename).resolve().is_relative_to(_PACKAGE_DIR):
                text = " ".join(to_cli_terms(str(message), flags).split())
                print(f"{PREFIX}: warning: {text}", file=sys.stderr)
            else:
                default_show(message, category, filename, lineno, file, line)
        warnings.showwarning = show
        yield
