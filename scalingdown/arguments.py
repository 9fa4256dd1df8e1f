"""Checks of a stage's options, made when they are parsed: a bad value is refused before any model loads.

A message names the Makefile variable and the flag (``LIMIT=-5 (--limit)``), since a user sets either one.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from scalingdown.errors import UserError


class ArgumentError(UserError, ValueError):
    """A flag or recipe value that cannot work; the message names the variable, the flag and what would."""


def setting(flag: str, value: object, variable: str | None = None) -> str:
    """How a message names a setting: ``LIMIT=-5 (--limit)``, or ``--shard_size -5`` without a make variable."""
    return f"{variable}={value} ({flag})" if variable else f"{flag} {value}"


def check_count(value: int | None, flag: str, what: str, variable: str | None = None, zero: str | None = None) -> None:
    """``value`` counts ``what``: at least 1, or also 0 when ``zero`` says what 0 means (``"all"``)."""
    if value is None:
        return
    lowest = 0 if zero else 1
    if value < lowest:
        rule = f"must be a positive number of {what}" + (f", or 0 for {zero}" if zero else "")
        raise ArgumentError(f"{setting(flag, value, variable)}: {rule}")


def check_range(
    value: float | None,
    flag: str,
    low: float,
    high: float | None = None,
    variable: str | None = None,
    what: str = "",
    low_inclusive: bool = True,
) -> None:
    """``low <= value`` (``<`` unless ``low_inclusive``) and ``value <= high``."""
    if value is None:
        return
    too_low = value < low if low_inclusive else value <= low
    if too_low or (high is not None and value > high):
        bound = f"{'at least' if low_inclusive else 'above'} {low}" + (f" and at most {high}" if high else "")
        raise ArgumentError(f"{setting(flag, value, variable)}: must be {bound}{' ' + what if what else ''}")


def check_choice(value: str, choices: Iterable[str], flag: str, variable: str | None = None) -> None:
    """``value`` is one of ``choices``; the message lists them."""
    choices = list(choices)
    if value not in choices:
        raise ArgumentError(f"{setting(flag, repr(value), variable)}: use one of {', '.join(choices)}")


def parse_recipe(parser, argv: list[str] | None) -> tuple:
    """``parser.parse_args_and_config(argv)`` (a TrlParser) with a missing recipe and a value the libraries' own
    dataclasses refuse (a bad ``lr_scheduler_type``, say) turned into an :class:`ArgumentError`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--config" in argv[:-1]:
        recipe = argv[argv.index("--config") + 1]
        if not Path(recipe).is_file():
            raise ArgumentError(f"CONFIG={recipe} (--config): no such recipe file; the recipes are under recipes/")
    try:
        return parser.parse_args_and_config(argv)
    except UserError:
        raise
    except ValueError as error:
        raise ArgumentError(" ".join(str(error).split())) from error
