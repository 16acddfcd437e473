"""Shared plotting helpers of ``metalite bench``: matplotlib without a display, and saving a figure.

Each section module draws its own plot; ``report.plots`` writes them."""

from __future__ import annotations


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save(plt, fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
