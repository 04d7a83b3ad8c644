"""Draw the tutorial's figure: a masked batch through one bidirectional layer.

Usage (from the repository root)::

    python docs/make_figures.py            # writes docs/masked_bidirectional.png

The picture is computed, not drawn by hand: it runs :func:`jaxseq.masked_scan` in both
directions on a toy batch with a "cell" that counts the steps it has taken, and colours
each (sequence, time step) by what the scan did there:

* computed  — a valid step (``t < length``): the cell ran and its output is kept;
* frozen    — a padded step (``t >= length``): the cell ran, but ``where(mask, new, old)``
  kept the old carry and the output is set to exactly 0.

The counter values printed in the boxes show that the reverse direction starts at each
sequence's own last valid element (its count is 1 there), exactly as
``pack_padded_sequence`` would do in PyTorch.
"""

from __future__ import annotations

import argparse
import pathlib

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

from jaxseq.scan import masked_scan  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
LENGTHS = (6, 4, 1, 0)
T = 6
COMPUTED, FROZEN = "#4C72B0", "#DDDDDD"


def count_steps(lengths: tuple[int, ...], T: int, reverse: bool):
    """Run a step-counting "cell" through the masked scan; return (outputs (T, N), final (N,))."""

    def counter(params, c, x):  # c (N, 1): how many valid steps this row has taken
        c = c + x
        return c, c

    N = len(lengths)
    xs = jnp.ones((T, N, 1), jnp.float32)
    final, ys = masked_scan(
        counter,
        None,
        jnp.zeros((N, 1), jnp.float32),
        xs,
        jnp.asarray(lengths, jnp.int32),
        reverse=reverse,
    )
    return ys[..., 0].T.tolist(), final[:, 0].tolist()  # (N, T), (N,)


def draw_direction(ax, lengths, T, reverse):
    ys, final = count_steps(lengths, T, reverse)
    N = len(lengths)
    for n, (length, row) in enumerate(zip(lengths, ys, strict=True)):
        y = N - 1 - n
        for t in range(T):
            valid = t < length
            ax.add_patch(
                Rectangle(
                    (t + 0.08, y + 0.12),
                    0.84,
                    0.76,
                    linewidth=1.0,
                    facecolor=COMPUTED if valid else FROZEN,
                    edgecolor="#333333",
                    hatch=None if valid else "///",
                )
            )
            label = f"{row[t]:g}" if valid else "0"
            ax.text(
                t + 0.5,
                y + 0.5,
                label,
                ha="center",
                va="center",
                fontsize=10,
                color="white" if valid else "#555555",
            )
        # the carry's path: h0 enters on one side, h_n leaves on the other
        start, end = (T + 0.05, -0.05) if reverse else (-0.05, T + 0.05)
        ax.annotate(
            "",
            xy=(end + (-0.35 if reverse else 0.35), y + 0.5),
            xytext=(end, y + 0.5),
            arrowprops=dict(arrowstyle="->", color="#C44E52", lw=1.5),
        )
        ax.add_patch(
            FancyArrowPatch(
                (start + (0.35 if reverse else -0.35), y + 0.5),
                (start, y + 0.5),
                arrowstyle="->",
                mutation_scale=10,
                color="#555555",
                lw=1.2,
            )
        )
        ax.text(
            start + (0.45 if reverse else -0.45),
            y + 0.5,
            "h0",
            ha="right" if not reverse else "left",
            va="center",
            fontsize=9,
            color="#555555",
        )
        ax.text(
            end + (-0.45 if reverse else 0.45),
            y + 0.5,
            f"h_n={final[n]:g}",
            ha="right" if reverse else "left",
            va="center",
            fontsize=9,
            color="#C44E52",
        )
        if not reverse:
            ax.text(-1.3, y + 0.5, f"length {length}", ha="right", va="center", fontsize=10)
    ax.set_xlim(-3.2 if not reverse else -1.6, T + 1.6)
    ax.set_ylim(-0.1, N + 0.05)
    ax.set_xticks([t + 0.5 for t in range(T)], [f"t={t}" for t in range(T)])
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    arrow = "right to left: t = T-1 ... 0" if reverse else "left to right: t = 0 ... T-1"
    ax.set_title(
        ("reverse direction, scanned " if reverse else "forward direction, scanned ") + arrow,
        fontsize=11,
        loc="left",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "masked_bidirectional.png")
    args = parser.parse_args()
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), gridspec_kw={"width_ratios": [1.2, 1]})
    draw_direction(axes[0], LENGTHS, T, reverse=False)
    draw_direction(axes[1], LENGTHS, T, reverse=True)
    handles = [
        Rectangle((0, 0), 1, 1, facecolor=COMPUTED, edgecolor="#333333"),
        Rectangle((0, 0), 1, 1, facecolor=FROZEN, edgecolor="#333333", hatch="///"),
    ]
    fig.legend(
        handles,
        [
            "computed: valid step, output kept (number = valid steps taken so far)",
            "padded step: carry frozen (where(mask, new, old)), output exactly 0",
        ],
        loc="lower center",
        ncol=2,
        frameon=False,
        fontsize=10,
    )
    fig.suptitle(
        "A masked batch (lengths 6, 4, 1, 0; T = 6) through one bidirectional layer", fontsize=12
    )
    fig.tight_layout(rect=(0, 0.09, 1, 0.97))
    fig.savefig(args.out, dpi=90, metadata={"Software": None})
    print(f"wrote {args.out.name}")


if __name__ == "__main__":
    main()
