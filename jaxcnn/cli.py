"""What the command-line entry points share: config-file flags and one-line errors for bad input."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

# TensorFlow (tf.data) logs its CPU feature notes from C++ at import; keep the console for ours.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from jaxcnn.errors import UserError


def fail(message: str) -> None:
    """End the program with ``message`` on one line and exit status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        # absl's messages span lines (and config overrides add a traceback); keep the first.
        fail(str(error).strip().splitlines()[0])
    except UserError as error:
        fail(str(error))


def run(main: Callable[[list[str]], None]) -> None:
    """``absl.app.run(main)`` where flag errors and :class:`UserError` end with exit status 2."""

    def guarded(argv: list[str]) -> None:
        # Orbax and tfds log every step of their work at INFO; warnings still show.
        logging.set_verbosity(logging.WARNING)
        try:
            main(argv)
        except UserError as error:
            fail(str(error))

    app.run(guarded, flags_parser=_parse_flags)
