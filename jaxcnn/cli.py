"""What the command-line entry points share: config-file flags and one-line errors for bad input."""

from __future__ import annotations

import logging as std_logging
import os
import re
import runpy
import sys
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from jaxcnn.errors import UserError


def fail(message: str) -> None:
    """End the program with ``message`` on one line and exit status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def _flag_values(argv: list[str], name: str) -> list[tuple[str, str]]:
    """(flag, value) pairs of ``--NAME…`` arguments, in both ``--f=v`` and ``--f v`` forms."""
    found = []
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}"):
            flag, eq, value = arg[2:].partition("=")
            if not eq and i + 1 < len(argv):
                value = argv[i + 1]
            found.append((flag, value))
    return found


def _config_specs(argv: list[str], flag_name: str) -> list[str]:
    """The values given to ``--FLAG_NAME`` itself (not to its ``--FLAG_NAME.field`` overrides)."""
    return [value for flag, value in _flag_values(argv, flag_name) if flag == flag_name]


def load_config_file(spec: str, function: str = "get_config") -> Any:
    """``get_config()`` (or ``get_config(ARG)``) of a ``FILE[:ARG]`` config spec.

    ``function`` names another function of the file to call the same way (e.g. ``get_sweep``).
    """
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise UserError(f"config file {path!r} not found")
    try:
        namespace = runpy.run_path(path)
    except SyntaxError as error:
        raise UserError(
            f"config file {path!r} has a syntax error at line {error.lineno}: {error.msg}"
        ) from None
    except Exception as error:
        raise UserError(f"config file {path!r} failed to load: {_one_line(error)}") from None
    if function not in namespace:
        raise UserError(f"config file {path!r} defines no {function}()")
    try:
        return namespace[function](arg) if arg else namespace[function]()
    except UserError:
        raise
    except Exception as error:
        raise UserError(
            f"{function}() of config file {path!r} failed: {_one_line(error)}"
        ) from None


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def unknown_field_error(config: ml_collections.ConfigDict, flag: str) -> str | None:
    """Why the override ``flag`` (``config.a.b``) names no field of ``config``; None if it does."""
    root, *path = flag.split(".")
    node = config
    for depth, key in enumerate(path):
        if not isinstance(node, ml_collections.ConfigDict) or key not in node:
            parent = ".".join([root, *path[:depth]])
            fields = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "none"
            return f"unknown config field {flag!r}: {parent} has no {key!r}; its fields: {fields}"
        node = node[key]
    return None


def _explain_override_error(argv: list[str], flag_name: str) -> str | None:
    """Name the first ``--config.a.b`` override whose field does not exist, with valid fields."""
    files = _config_specs(argv, flag_name)
    if not files:
        return None
    config = load_config_file(files[-1])
    for flag, _ in _flag_values(argv, f"{flag_name}."):
        if message := unknown_field_error(config, flag):
            return message
    return None


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        for spec in _config_specs(argv, "config"):
            load_config_file(spec)  # a missing or broken file: one line, before absl's parsing
        try:
            return flags.FLAGS(argv)
        except SystemExit as done:
            # absl's --help (and --helpfull, --helpxml) print their text and exit with status 1;
            # asking for help is not a failure.
            sys.exit(0 if done.code == 1 else done.code)
    except flags.Error as error:
        # absl's messages span lines; keep the first.
        fail(str(error).strip().splitlines()[0])
    except UserError as error:
        fail(str(error))
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        # ml_collections reports a bad override as a multi-line exception from inside absl.
        explained = _explain_override_error(argv, "config")
        fail(explained or " ".join(str(error).split()))


def take_overrides(argv: list[str], name: str = "config") -> tuple[list[str], list[str]]:
    """(``argv`` without its ``--NAME.FIELD=VALUE`` / ``--[no]NAME.FIELD`` arguments, those
    arguments); the scan stops at ``--``, after which everything is positional."""
    pattern = re.compile(rf"^--?(no)?{re.escape(name)}\.")
    rest, overrides = [], []
    for i, arg in enumerate(argv):
        if arg == "--":
            rest += argv[i:]
            break
        (overrides if i and pattern.match(arg) else rest).append(arg)
    return rest, overrides


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[str], name: str = "config"
) -> None:
    """Set the fields that ``overrides`` name (``--config.a.b=VALUE`` arguments, the syntax of
    ``jaxcnn.train``) in ``config``, in place, each value parsed as its field's type, as
    ml_collections does for a config file's overrides. For commands that start from a config
    a run recorded rather than from a file; an unknown field or a bad value is a
    :class:`UserError` naming it."""
    if not overrides:
        return
    for arg in overrides:
        flag = arg.lstrip("-").split("=", 1)[0]
        flag = flag[2:] if flag.startswith(f"no{name}.") else flag
        if message := unknown_field_error(config, flag):
            raise UserError(message)
    argv = [name, *overrides]
    flag_values = flags.FlagValues()
    try:
        config_flags.DEFINE_config_dict(
            name, config, flag_values=flag_values, sys_argv=argv, lock_config=False
        )
        flag_values(argv)  # sets the fields of ``config`` itself
    except flags.Error as error:
        raise UserError(str(error).strip().splitlines()[0]) from None
    except (config_flags.UnsupportedOperationError, TypeError, ValueError) as error:
        raise UserError(" ".join(str(error).split())) from None


def enable_compilation_cache() -> None:
    """Keep compiled XLA programs across runs, so a resumed or repeated run skips compilation.

    The cache lives in ``$JAXCNN_CACHE_DIR`` or ``~/.cache/jaxcnn/xla`` unless the user gave JAX
    one (``JAX_COMPILATION_CACHE_DIR``); programs that took under a second to compile are not
    worth the disk.
    """
    import jax

    if jax.config.jax_compilation_cache_dir:
        return
    path = os.environ.get("JAXCNN_CACHE_DIR") or os.path.expanduser("~/.cache/jaxcnn/xla")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


class _WithoutDuplicateNoise(std_logging.Filter):
    """Drop library logs that say again what jaxcnn reports itself: orbax's errors (each also
    reaches the training loop, which reports it in one line or raises it with its traceback)
    and tfds's note that a dataset about to be prepared has no dataset_info.json yet."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        if record.levelno >= std_logging.ERROR and "/orbax/" in record.pathname:
            return False
        return "has no dataset_info.json" not in record.getMessage()


def quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up notes off a command's console; call before TensorFlow loads.

    The CLIs call it (through :func:`run`); no import does, so importing an experiment file
    leaves the environment as it was (tested).
    """
    # TensorFlow (tf.data) logs CPU feature notes and warnings from C++ at import. Importing JAX
    # sets this to 1 unless it is set, so 1 is taken as unset; a level the user chose stays.
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1") == "1":
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    # TensorFlow 2.21 announces its oneDNN graph rewrites on stderr whatever the log level. They
    # speed up TF's own model ops, none of which jaxcnn runs (tf.data only decodes and augments).
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def run(main: Callable[..., None], *, config_overrides: bool = False) -> None:
    """``absl.app.run(main)`` where flag errors and :class:`UserError` end with exit status 2,
    ``--help`` with 0, and TensorFlow is quiet (:func:`quiet_tensorflow`).

    With ``config_overrides`` (commands that read the config a run recorded: evaluate,
    predict) the ``--config.FIELD=VALUE`` arguments are taken out before the flags are parsed
    and handed over as ``main(argv, overrides)``, to apply with :func:`apply_overrides` once
    the command has the config."""
    quiet_tensorflow()
    overrides: list[str] = []

    def parse(argv: list[str]) -> list[str]:
        if not config_overrides:
            return _parse_flags(argv)
        rest, taken = take_overrides(argv)
        overrides.extend(taken)
        return _parse_flags(rest)

    def guarded(argv: list[str]) -> None:
        # Orbax and tfds log every step of their work at INFO; warnings still show.
        logging.set_verbosity(logging.WARNING)
        std_logging.getLogger("absl").addFilter(_WithoutDuplicateNoise())
        enable_compilation_cache()
        try:
            main(argv, overrides) if config_overrides else main(argv)
        except UserError as error:
            fail(str(error))

    app.run(guarded, flags_parser=parse)
