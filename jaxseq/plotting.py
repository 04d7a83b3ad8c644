"""Draw training curves of the two frameworks on one figure and write a PNG.

matplotlib is imported lazily inside the function, with the non-interactive Agg backend,
so importing jaxseq never needs it (it is an ``examples`` extra).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["plot_curves"]


def plot_curves(
    curves: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    title: str = "training loss",
    xlabel: str = "step",
    ylabel: str = "loss",
    logy: bool = False,
    show_difference: bool | None = None,
    figsize: tuple[float, float] = (6.4, 4.8),
    dpi: int = 100,
) -> str:
    """Plot named curves (e.g. ``{"torch": losses_t, "jax": losses_j}``) into ``path`` (PNG).

    Args:
      curves: label -> values per step (each of length S_k; x is 0..S_k-1).
      path: where the PNG goes (parent folders are created).
      logy: log-scale y axis.
      show_difference: add a lower panel with ``|a - b|`` of the first two curves on a log
        scale (default: when exactly two curves of equal length are given). Exact zeros
        are drawn at the smallest positive float so the panel stays readable.
      figsize, dpi: the PNG is ``figsize * dpi`` pixels.

    Returns:
      The path written, as a string.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("plot_curves needs at least one curve")
    arrays = {k: np.asarray(v, dtype=np.float64).ravel() for k, v in curves.items()}
    names = list(arrays)
    if show_difference is None:
        show_difference = len(names) == 2 and arrays[names[0]].shape == arrays[names[1]].shape
    if show_difference and (len(names) < 2 or arrays[names[0]].shape != arrays[names[1]].shape):
        raise ValueError("show_difference needs two curves of the same length")
    if show_difference:
        fig, (ax, ax_diff) = plt.subplots(
            2, 1, figsize=figsize, dpi=dpi, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
        )
    else:
        fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
    try:
        styles = ["-", "--", ":", "-."]
        for i, name in enumerate(names):
            ax.plot(np.arange(arrays[name].size), arrays[name], styles[i % 4], label=name)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        ax.legend()
        ax.grid(True, alpha=0.3)
        if show_difference:
            a, b = arrays[names[0]], arrays[names[1]]
            diff = np.maximum(np.abs(a - b), np.finfo(np.float64).tiny)
            ax_diff.semilogy(np.arange(a.size), diff, color="black")
            ax_diff.set_ylabel(f"|{names[0]} - {names[1]}|")
            ax_diff.set_xlabel(xlabel)
            ax_diff.grid(True, alpha=0.3)
        else:
            ax.set_xlabel(xlabel)
        fig.tight_layout()
        path = os.fspath(path)
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        fig.savefig(path, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return path
