"""XLA settings that jaxcnn applies before JAX starts: default flags and the compilation cache.

``apply_default_flags()`` adds jaxcnn's measured defaults to ``XLA_FLAGS`` (a flag the user set
there keeps the user's value); ``enable_compilation_cache()`` turns on JAX's persistent cache
of compiled executables so that a resumed or repeated run skips compilation. Both must run
before JAX initialises its backends (the first ``jax.devices()`` or computation), which the
train CLI does first thing. BENCHMARKS.md has the measurements behind the defaults.
"""

from __future__ import annotations

import os

# Flags measured to help (or to keep the default behaviour explicit) on every backend; the
# CPU ones are ignored by GPU/TPU compilers. See BENCHMARKS.md, "XLA:CPU flags".
DEFAULT_FLAGS: tuple[str, ...] = ()

CACHE_DIR_ENV = "JAXCNN_CACHE_DIR"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "jaxcnn", "xla")
# CPU compiles of small models take ~1-10 s; cache everything that took longer than this.
MIN_CACHED_COMPILE_SECS = 0.5


def _flag_name(flag: str) -> str:
    return flag.split("=", 1)[0]


def apply_default_flags(defaults: tuple[str, ...] = DEFAULT_FLAGS) -> str:
    """Add ``defaults`` to ``$XLA_FLAGS`` unless the user set those flags; returns the result."""
    user_flags = os.environ.get("XLA_FLAGS", "").split()
    user_names = {_flag_name(f) for f in user_flags}
    added = [f for f in defaults if _flag_name(f) not in user_names]
    os.environ["XLA_FLAGS"] = " ".join(added + user_flags)
    return os.environ["XLA_FLAGS"]


def compilation_cache_dir() -> str | None:
    """``$JAXCNN_CACHE_DIR`` (empty: no cache) or ``~/.cache/jaxcnn/xla``."""
    directory = os.environ.get(CACHE_DIR_ENV, DEFAULT_CACHE_DIR)
    return os.path.expanduser(directory) if directory else None


def enable_compilation_cache(directory: str | None = None) -> str | None:
    """Cache compiled executables in ``directory`` (default :func:`compilation_cache_dir`).

    A cache directory the user already gave JAX (``JAX_COMPILATION_CACHE_DIR``) is kept.
    Returns the directory in use, or None if caching is off.
    """
    import jax

    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    directory = directory or compilation_cache_dir()
    if not directory:
        return None
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_CACHED_COMPILE_SECS)
    return directory
