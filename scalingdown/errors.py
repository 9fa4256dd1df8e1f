"""User errors: one line that names the problem and the fix, exit status 2, no traceback.

Bugs keep their traceback. ``SCALINGDOWN_DEBUG=1`` shows the traceback of a user error too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input from the person running a command (a flag, a path, a name, a missing repo); the message says
    what to change."""


def run_cli(cli: Callable[[], T]) -> T:
    """Run a stage's ``cli()``; a :class:`UserError` becomes ``error: <message>`` on stderr and exit status 2."""
    try:
        return cli()
    except UserError as error:
        if os.environ.get("SCALINGDOWN_DEBUG"):
            raise
        message = " ".join(str(error).split())
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
