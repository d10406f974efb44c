"""What every figure module shares: the last step of drawing a figure.

`xtcdr.plots` lists which module draws which figure.
"""
from __future__ import annotations

from matplotlib.figure import Figure

__all__ = ["finish_figure", "hide_unused_axes"]


def finish_figure(fig: Figure, title: str | None = None, **suptitle_kwargs) -> Figure:
    """Give ``fig`` its title (when there is one), lay it out tightly and return it.

    ``suptitle_kwargs`` go to ``Figure.suptitle`` (e.g. ``fontsize=10``).
    """
    if title:
        fig.suptitle(title, **suptitle_kwargs)
    fig.tight_layout()
    return fig


def hide_unused_axes(axes, n_used: int) -> None:
    """Hide the panels of a grid ``axes`` past the first ``n_used`` (a grid larger than its panels)."""
    for ax in list(axes.flat)[n_used:]:
        ax.set_visible(False)
