"""What every command-line entry point shares: one-line errors with exit code 2."""

from __future__ import annotations

import sys
import warnings
from typing import Callable, Sequence

from .errors import UserError


def _short_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=file or sys.stderr)


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run `main`, turning a `UserError` into `error: ...` on stderr and exit code 2."""
    warnings.showwarning = _short_warning
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
