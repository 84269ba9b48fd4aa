"""What the first layer learned: its filters as image tiles, and ViT's position embeddings.

The first convolution sees the image itself, so its kernels can be drawn as small images: RGB
kernels in colour, grey ones in grey, each scaled on its own so that 0 is mid-grey and its
largest weight (either sign) reaches black or white. For a ViT that convolution is the patch
embedding. Its learned position embeddings are drawn as in the ViT paper (Dosovitskiy et al.,
2021, Fig. 7): for every patch position, the cosine similarity of its embedding to those of
all positions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from flax import traverse_util

from jaxcnn.pictures.stages import ModuleCall


def conv_kernel(variables: Any, call: ModuleCall) -> np.ndarray:
    """The kernel (KH, KW, C_in, C_out) of the convolution ``call``, as float32."""
    params = variables["params"]
    for key in call.path:
        params = params[key]
    return np.asarray(params["kernel"], np.float32)


def filter_tiles(kernel: np.ndarray) -> np.ndarray:
    """One (KH, KW, 3) tile in [0, 1] per filter of ``kernel`` (KH, KW, C_in, C_out): colour
    for 3 input channels, grey for 1 (and the channel mean for other counts); 0.5 is a zero
    weight."""
    tiles = np.moveaxis(kernel, -1, 0)  # (C_out, KH, KW, C_in)
    if tiles.shape[-1] != 3:
        tiles = np.repeat(tiles.mean(axis=-1, keepdims=True), 3, axis=-1)
    peak = np.abs(tiles).max(axis=(1, 2, 3), keepdims=True)
    return tiles / (2 * np.where(peak > 0, peak, 1.0)) + 0.5


def strongest(kernel: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the filters to draw: all in order if at most ``limit``, else the ``limit``
    of largest norm, largest first."""
    count = kernel.shape[-1]
    if count <= limit:
        return np.arange(count)
    norms = np.sqrt((kernel**2).reshape(-1, count).sum(axis=0))
    return np.argsort(-norms, kind="stable")[:limit]


def grid_shape(count: int) -> tuple[int, int]:
    """(rows, columns) of a near-square grid of ``count`` tiles, wider than tall."""
    columns = math.ceil(math.sqrt(count))
    return math.ceil(count / columns), columns


def tile_grid(tiles: np.ndarray, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """``tiles`` (N, H, W, C) laid out row by row (:func:`grid_shape`) in one image, ``pad``
    pixels of ``fill`` between and around them."""
    count, height, width, channels = tiles.shape
    rows, columns = grid_shape(count)
    grid = np.full(
        (rows * (height + pad) + pad, columns * (width + pad) + pad, channels), fill, tiles.dtype
    )
    for i, tile in enumerate(tiles):
        top, left = pad + (i // columns) * (height + pad), pad + (i % columns) * (width + pad)
        grid[top : top + height, left : left + width] = tile
    return grid


def position_embedding(variables: Any, grid: tuple[int, int]) -> tuple[str, np.ndarray] | None:
    """(name, embeddings (rows, columns, D)) of the learned position embedding of a patch grid,
    if the model has one: a parameter whose name contains ``pos`` with one row per patch (plus
    at most one, the class token's, which is left out)."""
    positions = grid[0] * grid[1]
    for path, value in traverse_util.flatten_dict(variables["params"]).items():
        shape = getattr(value, "shape", ())
        if "pos" in path[-1].lower() and len(shape) == 3 and shape[1] - positions in (0, 1):
            table = np.asarray(value[0, shape[1] - positions :], np.float32)
            return "/".join(path), table.reshape(*grid, shape[2])
    return None


def position_similarity(embeddings: np.ndarray) -> np.ndarray:
    """(rows, columns, rows, columns): cosine similarity of each position's embedding to each
    position's."""
    rows, columns, dim = embeddings.shape
    flat = embeddings.reshape(-1, dim)
    flat = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    return (flat @ flat.T).reshape(rows, columns, rows, columns)
