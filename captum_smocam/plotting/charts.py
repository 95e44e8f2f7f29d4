"""Charts of what maps say: region tables, SMOCAM's convergence, one subject within a reference distribution."""
from __future__ import annotations

import os
from typing import Mapping, Optional, Union

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._figures import _chart_doc, _figure_and_axes, _finish, _to_1d

__all__ = ["plot_region_attention", "plot_convergence", "plot_asymmetry"]

_LOSS_COLORS = {"total": "black", "distance": "tab:blue", "l2": "tab:orange", "smooth": "tab:green"}


@_chart_doc
def plot_region_attention(
    table,
    *,
    column: str = "share",
    top: Optional[int] = 15,
    title: Optional[str] = None,
    ax: Optional[Axes] = None,
    output_file: Optional[Union[str, os.PathLike]] = None,
) -> Figure:
    """A region table as a horizontal bar chart, largest value at the top.

    Args:
        table (pandas.DataFrame): from
            :func:`captum_smocam.regions.get_region_table` or
            :func:`captum_smocam.regions.aggregate_region_tables`. Bars are
            labelled by its ``name`` column (else ``label``, else the index).
            For an aggregated ``"<stat>_mean"`` column, the matching
            ``"<stat>_sd"`` column is drawn as error bars.
        column (str, optional): the column to plot. Default: ``"share"``
        top (int, optional): keep the ``top`` largest regions (``None``: all).
            Default: ``15``
        {chart args}

    Examples::

        >>> import pandas as pd
        >>> t = pd.DataFrame({"name": ["Right-Hippocampus", "Left-Hippocampus"], "share": [0.4, 0.1]})
        >>> fig = plot_region_attention(t)
        >>> [float(b.get_width()) for b in fig.axes[0].patches]
        [0.4, 0.1]
    """
    if column not in getattr(table, "columns", ()):
        raise ValueError(f"column {column!r} is not in the table; its columns are {list(getattr(table, 'columns', []))}")
    if top is not None and (not isinstance(top, (int, np.integer)) or top < 1):
        raise ValueError(f"top must be a positive int or None; got {top!r}")
    rows = table.sort_values(column, ascending=False, kind="mergesort")
    rows = rows[rows[column].notna()]
    if top is not None:
        rows = rows.head(int(top))
    if "name" in rows.columns:
        labels = rows["name"].astype(str).tolist()
    elif "label" in rows.columns:
        labels = rows["label"].astype(str).tolist()
    else:
        labels = [str(i) for i in rows.index]
    sd_col = column[: -len("_mean")] + "_sd" if column.endswith("_mean") else None
    err = rows[sd_col].fillna(0.0).to_numpy() if sd_col and sd_col in rows.columns else None
    fig, ax, made_here = _figure_and_axes(ax, (6.0, 0.8 + 0.3 * max(len(rows), 1)))
    y = np.arange(len(rows))
    ax.barh(y, rows[column].to_numpy(dtype=float), xerr=err, color="tab:orange", edgecolor="black", linewidth=0.5)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    pretty = {"share": "share of positive attention", "attention_mean": "mean attention", "attention_sum": "summed attention"}
    ax.set_xlabel(pretty.get(column, column))
    if title:
        ax.set_title(title)
    return _finish(fig, output_file, made_here)


@_chart_doc
def plot_convergence(
    history: Mapping[str, object],
    *,
    title: Optional[str] = None,
    ax: Optional[Axes] = None,
    output_file: Optional[Union[str, os.PathLike]] = None,
) -> Figure:
    """SMOCAM's loss terms per optimisation step.

    Draws each of ``"total"``, ``"distance"``, ``"l2"`` and ``"smooth"``
    present in ``history``. A term of shape ``(n_steps, N)`` (N examples) is
    drawn as its mean over examples with the min-max range shaded. The y axis
    is logarithmic when every value is positive and they span more than two
    decades. ``"best_step"`` (an int, or one per example) is marked by dashed
    vertical lines.

    Args:
        history (dict): e.g. ``SMOCAM.history``; values are tensors, arrays or
            lists of shape ``(n_steps,)`` or ``(n_steps, N)``.
        {chart args}

    Examples::

        >>> import torch
        >>> steps = torch.arange(1, 51, dtype=torch.float32)[:, None]
        >>> h = {"total": 1 / steps + torch.rand(50, 4) * 0.01, "distance": 0.5 / steps.expand(50, 4),
        ...      "l2": torch.zeros(50, 4), "smooth": 0.1 * torch.ones(50, 4), "best_step": torch.tensor([49, 48, 49, 47])}
        >>> fig = plot_convergence(h)
        >>> [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        ['total', 'distance', 'l2', 'smooth', 'best step']
    """
    if not isinstance(history, Mapping):
        raise TypeError(f"history must be a dict of loss terms; got {type(history).__name__}")
    terms = [k for k in _LOSS_COLORS if k in history]
    if not terms:
        raise ValueError(f"history has none of the loss terms {list(_LOSS_COLORS)}; got keys {list(history)}")
    curves = {}
    n_steps = None
    for k in terms:
        v = history[k]
        arr = np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise ValueError(f"history[{k!r}] must have shape (n_steps,) or (n_steps, N); got {arr.shape}")
        if n_steps is not None and arr.shape[0] != n_steps:
            raise ValueError(f"history[{k!r}] has {arr.shape[0]} steps but {terms[0]!r} has {n_steps}")
        n_steps = arr.shape[0]
        curves[k] = arr
    fig, ax, made_here = _figure_and_axes(ax, (6.0, 3.6))
    steps = np.arange(n_steps)
    for k, arr in curves.items():
        ax.plot(steps, arr.mean(axis=1), color=_LOSS_COLORS[k], label=k)
        if arr.shape[1] > 1:
            ax.fill_between(steps, arr.min(axis=1), arr.max(axis=1), color=_LOSS_COLORS[k], alpha=0.2, linewidth=0)
    values = np.concatenate([a.ravel() for a in curves.values()])
    values = values[np.isfinite(values)]
    if values.size and values.min() > 0 and values.max() / values.min() > 100:
        ax.set_yscale("log")
    best = history.get("best_step")
    if best is not None:
        best_steps = sorted({int(b) for b in _to_1d(best, "best_step")})
        for i, b in enumerate(best_steps):
            ax.axvline(b, color="gray", linestyle="--", linewidth=1, label="best step" if i == 0 else None)
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _finish(fig, output_file, made_here)


@_chart_doc
def plot_asymmetry(
    reference,
    subject_true,
    subject_pred=None,
    *,
    xlabel: str = "normalised asymmetry (R − L)",
    bins: int = 30,
    title: Optional[str] = None,
    ax: Optional[Axes] = None,
    output_file: Optional[Union[str, os.PathLike]] = None,
) -> Figure:
    """Where one subject (and the model's prediction) sits in a reference distribution.

    The SMOCAM poster plots the training set's normalised hippocampal
    asymmetries (right minus left volume) and marks a subject's true
    asymmetry (blue) and the model's prediction (red): a model that only
    ever predicts near-symmetric volumes shows up as a red line near the
    centre while the blue line sits in the tail. The legend gives each
    value's percentile rank in the reference (% of reference values <= it).

    Args:
        reference (array-like or tensor): the quantity over a reference
            population (e.g. the training set); non-finite values are dropped.
        subject_true (float or sequence of float): the subject's (or
            subjects') true value.
        subject_pred (float or sequence of float, optional): the model's
            prediction, same length as ``subject_true``. Default: ``None``
        xlabel (str, optional): x-axis label. Default: ``"normalised asymmetry (R − L)"``
        bins (int, optional): histogram bins. Default: ``30``
        {chart args}

    Examples::

        >>> import numpy as np
        >>> ref = np.random.default_rng(0).normal(0, 0.03, 500)
        >>> fig = plot_asymmetry(ref, 0.12, 0.01)
        >>> len(fig.axes[0].lines)                  # true value and prediction
        2
    """
    ref = _to_1d(reference, "reference")
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        raise ValueError("reference has no finite values; expected the quantity over a reference population")
    if not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive int; got {bins!r}")
    true = _to_1d(subject_true, "subject_true")
    pred = None if subject_pred is None else _to_1d(subject_pred, "subject_pred")
    if true.size == 0:
        raise ValueError("subject_true is empty; expected a value or a list of values")
    if pred is not None and pred.size != true.size:
        raise ValueError(
            f"subject_pred has {pred.size} value(s) but subject_true has {true.size}; expected one prediction per subject"
        )
    fig, ax, made_here = _figure_and_axes(ax, (6.0, 3.6))
    ax.hist(ref, bins=int(bins), color="lightgray", edgecolor="gray", label=f"reference (n={ref.size})")

    def rank(v: float) -> float:
        return 100.0 * float(np.mean(ref <= v))

    def mark(values: np.ndarray, color: str, style: str, what: str) -> None:
        for i, v in enumerate(values):
            if values.size == 1:
                label = f"{what}: {v:.3g} (percentile rank {rank(v):.0f})"
            else:
                label = f"{what} (n={values.size})" if i == 0 else None
            ax.axvline(v, color=color, linestyle=style, linewidth=2, label=label)

    mark(true, "tab:blue", "-", "true value")
    if pred is not None:
        mark(pred, "tab:red", "--", "model prediction")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("subjects")
    ax.set_ylim(top=ax.get_ylim()[1] * 1.4)  # headroom for the legend
    ax.legend(fontsize=8, loc="upper left")
    if title:
        ax.set_title(title)
    return _finish(fig, output_file, made_here)
