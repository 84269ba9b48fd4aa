"""The figures of ``python -m jaxcnn.visualize``, drawn with matplotlib's Agg backend (no
display needed) into small PNG files. Each function takes arrays ready to draw and a path."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DPI = 80


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str) -> str:
    figure.savefig(path, dpi=DPI)
    return path


def _show(ax, image: np.ndarray, title: str = "", **kwargs) -> None:
    """An image without axes: grey (H, W) in [0, 1] unless ``cmap``/``vmin`` say otherwise."""
    if image.ndim == 2:
        kwargs = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0, **kwargs}
    ax.imshow(image, interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _numbers(ax, values: np.ndarray, title: str, cmap: str = "gray", signed: bool = False):
    """A small matrix drawn as cells with its values written in them (``signed``: a colour
    scale centred on 0)."""
    limit = np.abs(values).max() or 1.0
    low, high = (-limit, limit) if signed else (values.min(), values.max())
    image = ax.imshow(values, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
    for (i, j), value in np.ndenumerate(values):
        red, green, blue, _ = image.cmap(image.norm(value))
        dark = 0.3 * red + 0.6 * green + 0.1 * blue < 0.5
        colour = "white" if dark else "black"
        ax.text(j, i, f"{value + 0.0:g}", ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def tutorial_sobel(image: np.ndarray, kernel: np.ndarray, feature_map: np.ndarray, path: str):
    """The step image, the Sobel kernel and the feature map, numbers in every cell."""
    figure = _figure(7.5, 2.7)
    axes = figure.subplots(1, 3)
    _numbers(axes[0], image, "5×5 step image")
    _numbers(axes[1], kernel, "Sobel kernel (horizontal edges)")
    _numbers(axes[2], feature_map, "feature map (zero padding 1)", "RdBu_r", signed=True)
    return _save(figure, path)


def tutorial_max_pool(image: np.ndarray, pooled: np.ndarray, path: str) -> str:
    """A 4×4 image with its 2×2 windows outlined, and the 2×2 max-pooled result."""
    from matplotlib.patches import Rectangle

    figure = _figure(5.0, 2.6)
    axes = figure.subplots(1, 2)
    _numbers(axes[0], image, "4×4 image, 2×2 windows")
    for top in (0, 2):
        for left in (0, 2):
            window = Rectangle((left - 0.5, top - 0.5), 2, 2, fill=False, color="C1", lw=2.5)
            axes[0].add_patch(window)
    _numbers(axes[1], pooled, "max of each window")
    return _save(figure, path)


def filter_grid(grid: np.ndarray, title: str, path: str) -> str:
    """One image of filter tiles (:func:`filters.tile_grid`), scaled up without smoothing."""
    height, width = grid.shape[:2]
    scale = 4.0 / max(height, width)
    figure = _figure(max(2.5, width * scale), max(2.0, height * scale + 0.5))
    _show(figure.subplots(), grid, title)
    return _save(figure, path)


def position_similarity(similarity: np.ndarray, path: str) -> str:
    """For each patch position (a small map, laid out on the patch grid), the cosine
    similarity of its position embedding to every position's."""
    rows, columns = similarity.shape[:2]
    figure = _figure(min(8.0, 0.5 * columns + 1.2), min(8.0, 0.5 * rows + 0.6))
    axes = figure.subplots(rows, columns, squeeze=False, gridspec_kw={"wspace": 0, "hspace": 0})
    for (i, j), ax in np.ndenumerate(axes):
        image = ax.imshow(similarity[i, j], cmap="viridis", vmin=-1, vmax=1)
        ax.set_axis_off()
    figure.colorbar(image, ax=axes, shrink=0.6, label="cosine similarity")
    return _save(figure, path)


def feature_maps(
    image: np.ndarray,
    stages: Sequence[tuple[str, np.ndarray, np.ndarray]],
    path: str,
) -> str:
    """The input, then one row per stage: ``(label, maps (H, W, C), channels to show)``, each
    channel scaled to its own range (bright: strong)."""
    columns = 1 + max(len(channels) for _, _, channels in stages)
    figure = _figure(1.1 * columns + 0.4, 1.15 * len(stages) + 0.3)
    axes = figure.subplots(len(stages), columns, squeeze=False)
    for row, (label, maps, channels) in enumerate(stages):
        for ax in axes[row]:
            ax.set_axis_off()
        if row == 0:
            axes[0, 0].set_axis_on()
            _show(axes[0, 0], image, "input")
        for column, channel in enumerate(channels, start=1):
            axes[row, column].set_axis_on()
            plane = maps[..., channel]
            _show(
                axes[row, column],
                plane,
                f"ch {channel}",
                cmap="viridis",
                vmin=plane.min(),
                vmax=max(plane.max(), plane.min() + 1e-6),
            )
        axes[row, 1].set_ylabel(label, fontsize=7)
    return _save(figure, path)


def class_maps(
    images: np.ndarray,
    maps: Sequence[Sequence[tuple[np.ndarray, str]]],
    path: str,
) -> str:
    """One row per image: the image, then each (class activation map, title) over it."""
    columns = 1 + max(len(row) for row in maps)
    figure = _figure(1.6 * columns, 1.75 * len(images))
    axes = figure.subplots(len(images), columns, squeeze=False)
    for row, (image, overlays) in enumerate(zip(images, maps, strict=True)):
        for ax in axes[row]:
            ax.set_axis_off()
        _show(axes[row, 0], image, "image")
        for column, (heat, title) in enumerate(overlays, start=1):
            ax = axes[row, column]
            _show(ax, image)
            ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0, interpolation="bilinear")
            ax.set_title(title, fontsize=8)
    return _save(figure, path)


def gallery(images: np.ndarray, titles: Sequence[str], path: str, columns: int = 4) -> str:
    """Images in a grid, each with its (multi-line) title."""
    rows = -(-len(images) // columns)
    figure = _figure(1.55 * columns, 1.8 * rows)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, image, title in zip(axes.flat, images, titles, strict=False):
        _show(ax, image, title)
    return _save(figure, path)
