"""Figures of a trained model's results, as PNG files (matplotlib's Agg canvas, no display).

:func:`plot_confusion_matrix` draws the confusion matrix that ``python -m jaxcnn.evaluate``
writes; it takes plain arrays, so anything that counts (true, predicted) pairs can use it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

_NAMED_TICKS_UP_TO = 40  # classes; beyond, the axes show class numbers
_COUNTS_UP_TO = 20  # classes; beyond, the cells are too small to print counts in


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], path: str, title: str
) -> None:
    """Write ``matrix`` (rows: true class, columns: predicted class; counts) to the PNG
    ``path``. Colour is each row's fraction (the share of a class's examples predicted as
    each class), so rare and common classes read alike; cells show the counts where there is
    room, the axes the class names where there are at most 40 classes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.float64)
    num_classes = counts.shape[0]
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = min(20.0, max(5.0, 0.45 * num_classes + 2.5))
    figure = Figure(figsize=(size + 1.0, size), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    if num_classes <= _NAMED_TICKS_UP_TO:
        ticks = np.arange(num_classes)
        names = [str(name) for name in class_names] or [str(i) for i in ticks]
        ax.set_xticks(ticks, names, rotation=90 if max(map(len, names)) > 3 else 0)
        ax.set_yticks(ticks, names)
    if num_classes <= _COUNTS_UP_TO:
        for (row, column), count in np.ndenumerate(counts.astype(np.int64)):
            if count:
                dark = fractions[row, column] > 0.5
                ax.text(
                    column,
                    row,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    tmp = f"{path}.tmp.png"
    figure.savefig(tmp, dpi=100)
    os.replace(tmp, path)
