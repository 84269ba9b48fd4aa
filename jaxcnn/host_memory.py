"""Keep XLA:CPU's step buffers in the process heap between steps (glibc malloc settings).

XLA:CPU allocates the temporary buffer of a compiled function (for a train step: every
activation kept for the backward pass, about 290 MB for ResNet-20 at batch 128) afresh on each
call, from one of its worker threads. glibc's malloc gives a worker thread a request that size
as a new ``mmap`` and unmaps it when it is freed, so every step page-faults its whole working
set back in from zero-filled pages: 73,000 page faults and a third of ResNet-20's CPU step time
(BENCHMARKS.md, "Host memory"). With one malloc arena, no ``mmap`` for large blocks and a high
trim threshold, the buffer is carved from the heap once and reused by every later step, much as
GPU frameworks keep a caching allocator. The cost: memory freed by the process is kept for
reuse instead of being returned to the system, so its resident size stays near its peak.

``import jaxcnn`` applies these settings (they only help if they come before JAX starts its CPU
threads). Set ``JAXCNN_MALLOC=system`` to leave malloc as it is. Elsewhere than on glibc
(macOS, musl) nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import platform

from jaxcnn.errors import UserError, unknown_choice

# mallopt(3) parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_INT_MAX = 2**31 - 1

ENV_VAR = "JAXCNN_MALLOC"
CHOICES = ("reuse", "system")


def requested() -> str:
    """``$JAXCNN_MALLOC``: ``reuse`` (the default) or ``system``; a ``UserError`` otherwise."""
    choice = os.environ.get(ENV_VAR, "reuse")
    if choice not in CHOICES:
        raise unknown_choice(ENV_VAR, choice, CHOICES)
    return choice


def configure() -> bool:
    """Apply the malloc settings unless ``$JAXCNN_MALLOC`` says otherwise; True if applied.

    An invalid ``$JAXCNN_MALLOC`` changes nothing here; the command-line entry points report it.
    """
    try:
        choice = requested()
    except UserError:
        return False
    if choice == "system" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    # One arena: worker threads allocate from the main heap, which grows with brk rather than
    # mmap, so a large block freed by one step is there for the next.
    settings = {_M_ARENA_MAX: 1, _M_MMAP_MAX: 0, _M_TRIM_THRESHOLD: _INT_MAX}
    return all(mallopt(param, value) == 1 for param, value in settings.items())
