"""User-facing errors: bad input that the CLIs report in one line with exit status 2."""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """A problem with what the user asked for (config, name, path), not a bug.

    The command-line entry points print ``str(error)`` on one line and exit with status 2.
    """


def unknown_choice(kind: str, name: object, choices: Iterable[str]) -> UserError:
    """An error for a name that is not one of ``choices``, listing the valid ones."""
    valid = ", ".join(sorted(choices))
    return UserError(f"unknown {kind} {name!r}; valid choices: {valid}")
