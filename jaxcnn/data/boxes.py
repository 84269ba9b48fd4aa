"""Random-erasing boxes, written once for TensorFlow and JAX (no TensorFlow import here)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# The erased fraction of the image area, and the log-uniform range of its aspect ratio.
ERASE_AREA = (0.02, 1 / 3)
ERASE_ASPECT = (0.3, 1 / 0.3)


def erase_box(u: Sequence, height: int, width: int, prob: float, xp: Any) -> tuple:
    """(apply, top, left, box height, box width) of a random-erasing box from five U(0, 1)
    draws ``u``; ``xp`` is ``jax.numpy`` or its TensorFlow stand-in, so
    that both pipelines draw boxes from the very same distribution."""
    u_apply, u_area, u_aspect, u_top, u_left = u
    area = height * width * (ERASE_AREA[0] + (ERASE_AREA[1] - ERASE_AREA[0]) * u_area)
    log_lo, log_hi = math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])
    aspect = xp.exp(log_lo + (log_hi - log_lo) * u_aspect)
    box_h = xp.clip(xp.round(xp.sqrt(area * aspect)), 1.0, height)
    box_w = xp.clip(xp.round(xp.sqrt(area / aspect)), 1.0, width)
    top = xp.floor(u_top * (height - box_h + 1))
    left = xp.floor(u_left * (width - box_w + 1))
    return u_apply < prob, top, left, box_h, box_w
