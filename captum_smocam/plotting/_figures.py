"""What every plot shares: its figure and axes, and saving (atomically) and closing it."""
from __future__ import annotations

from typing import Optional, Tuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._io import save_figure

#: The Args entries and the Returns block every chart shares, put into its docstring by :func:`_chart_doc`.
_CHART_ARGS = """title (str, optional): axes title. Default: ``None``
        ax (matplotlib Axes, optional): axes to draw in. Default: a new figure.
        output_file (str or Path, optional): save the figure here. Default: ``None``

    Returns:
        matplotlib.figure.Figure: the figure."""


def _chart_doc(func):
    """Write :data:`_CHART_ARGS` where ``func``'s docstring says ``{chart args}`` (the three arguments every chart
    takes last, and what it returns), so that they are documented once."""
    if func.__doc__:  # None under python -OO
        func.__doc__ = func.__doc__.replace("{chart args}", _CHART_ARGS)
    return func


def _figure_and_axes(ax: Optional[Axes], figsize: Tuple[float, float]) -> Tuple[Figure, Axes, bool]:
    """``(figure, axes, made_here)``: the caller's axes and their figure, or a new figure with one axes."""
    if ax is not None:
        return ax.figure, ax, False
    fig = plt.figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot(), True


def _finish(fig: Figure, output_file, made_here: bool) -> Figure:
    """Save the figure when ``output_file`` is given (atomically); then close it if this module made it."""
    if output_file is not None:
        save_figure(fig, output_file, close=made_here, dpi=100)
    return fig


def _to_1d(x, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    return arr.reshape(-1)
