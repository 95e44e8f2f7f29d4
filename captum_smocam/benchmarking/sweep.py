"""One-at-a-time parameter sweeps and their selection rule (``benchmarks/sweep_smocam.py``).

A sweep starts from a base configuration and moves one parameter at a time
to each of its other values (:func:`one_at_a_time`). The rule that picks a
configuration was fixed before looking at the numbers: rank the
configurations by their mean on each score (1 = best), keep the smallest
mean rank, and break ties by the lower wall time (:func:`rank_configs`).
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Sequence

from .scores import HIGHER_IS_BETTER

__all__ = ["SWEEP_SCORES", "one_at_a_time", "rank_configs", "parse_overrides"]

#: The scores a sweep ranks configurations by (each counts once).
SWEEP_SCORES = ("mass_dilated", "auroc", "deletion_auc")


def one_at_a_time(base: Mapping, grid: Mapping[str, Sequence]) -> List[dict]:
    """The base configuration, then each parameter moved alone to each of its other values.

    Args:
        base (mapping): parameter -> value of the base configuration.
        grid (mapping): parameter -> values tried.

    Returns:
        list of dict: configurations, each with a ``name`` (``"base"`` or ``"key=value"``).

    Examples::

        >>> cfgs = one_at_a_time({"a": 1, "b": 2}, {"a": (1, 3), "b": (2,)})
        >>> [c["name"] for c in cfgs]
        ['base', 'a=3']
    """
    configs = [dict(base, name="base")]
    for key, values in grid.items():
        for v in values:
            if v != base[key]:
                configs.append(dict(base, **{key: v}, name=f"{key}={v}"))
    return configs


def rank_configs(summary, scores: Sequence[str] = SWEEP_SCORES):
    """Add a rank column per score (1 = best mean) and ``mean_rank``; sort by it, then by ``seconds_per_map``.

    The direction of each score is that of
    :data:`captum_smocam.benchmarking.scores.HIGHER_IS_BETTER`.

    Args:
        summary (pandas.DataFrame): one row per configuration, with the mean of
            each score and ``seconds_per_map``.
        scores (sequence of str, optional): the columns ranked. Default: :data:`SWEEP_SCORES`

    Returns:
        pandas.DataFrame: a sorted copy with ``rank_<score>`` and ``mean_rank`` columns.

    Examples::

        >>> import pandas as pd
        >>> s = pd.DataFrame({"config": ["x", "y"], "mass_dilated": [0.2, 0.3], "auroc": [0.9, 0.8],
        ...                   "deletion_auc": [1.0, 2.0], "seconds_per_map": [1.0, 1.0]})
        >>> list(rank_configs(s)["config"])  # y is better on two of three scores
        ['y', 'x']
    """
    out = summary.copy()
    for c in scores:
        out[f"rank_{c}"] = out[c].rank(ascending=not HIGHER_IS_BETTER.get(c, True), method="average")
    out["mean_rank"] = out[[f"rank_{c}" for c in scores]].mean(axis=1)
    return out.sort_values(["mean_rank", "seconds_per_map"], kind="mergesort")


def parse_overrides(items: Iterable[str], grid: Mapping[str, Sequence], *, multi: bool) -> Dict[str, object]:
    """``KEY=VALUE`` (``multi=False``) or ``KEY=V1,V2,...`` (``multi=True``) pairs as a dict.

    Each value gets the type of ``grid[KEY]``'s values (``int``, ``float`` or ``str``).

    Raises:
        ValueError: an item is not ``KEY=VALUE`` with ``KEY`` in ``grid``.

    Examples::

        >>> grid = {"smooth_weight": (0.05, 0.2), "n_steps": (50, 100)}
        >>> parse_overrides(["smooth_weight=0.01"], grid, multi=False)
        {'smooth_weight': 0.01}
        >>> parse_overrides(["n_steps=50,100"], grid, multi=True)
        {'n_steps': (50, 100)}
    """
    out: Dict[str, object] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or key not in grid or not value:
            raise ValueError(f"expected KEY=VALUE with KEY one of {list(grid)}, got {item!r}")
        kind = type(next(iter(grid[key])))
        out[key] = tuple(kind(v) for v in value.split(",")) if multi else kind(value)
    return out
