"""What every plot shares: its figure and axes, and saving (atomically) and closing it."""
from __future__ import annotations

from typing import Optional, Tuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._io import save_figure


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
