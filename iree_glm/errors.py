"""Errors a user can act on.

Everything raised as a `UserError` is printed by the command-line tools as one line
(`error: <message>`) with exit code 2; anything else is a bug in iree_glm.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Callable, Sequence


class UserError(Exception):
    """Bad input: a file, option or request the user can fix."""


class CheckpointError(UserError):
    """A checkpoint folder that cannot be read or does not describe a supported model."""


class BundleError(UserError):
    """A bundle folder that is missing files, has wrong hashes, or cannot be written."""


class RequestError(UserError):
    """A generation request that cannot be served (prompt too long, bad token ids, ...)."""


def _short_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=file or sys.stderr)


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a command line's `main`, turning a `UserError` into `error: ...` on stderr and exit
    code 2 (and warnings into `warning: ...` lines)."""
    warnings.showwarning = _short_warning
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`run ... | head -c1`): stop quietly, like other command-line tools;
        # stdout goes to /dev/null so the interpreter's final flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
