"""The configurations and the selection rule of ``benchmarks/tune_smocam.py`` (issue 19).

Each configuration is a set of :meth:`captum_smocam.SMOCAM.attribute` settings; ``current`` is the
default before issue 19. The rule (:func:`rank_table`) is the one in the script's docstring, fixed
before the run.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np
import pandas as pd

import torch
from torch import nn

from .io import markdown_table
from .scores import paired_bootstrap_ci

__all__ = ["CONFIGS", "SCORES", "BlockReader", "block_share", "held", "paired_table", "rank_table"]

_INF = math.inf
#: Named configurations (settings passed to ``SMOCAM.attribute``).
CONFIGS: Dict[str, dict] = {
    # the default of issue 12 (area 20, smoothness 0.01, no fidelity constraint)
    "current": {"area_weight": 20.0, "smooth_weight": 0.01, "fidelity_tol": _INF},
    "smooth0.3": {"area_weight": 20.0, "smooth_weight": 0.3, "fidelity_tol": _INF},
    "smooth1": {"area_weight": 20.0, "smooth_weight": 1.0, "fidelity_tol": _INF},
    "smooth3": {"area_weight": 20.0, "smooth_weight": 3.0, "fidelity_tol": _INF},
    "smooth1_area40": {"area_weight": 40.0, "smooth_weight": 1.0, "fidelity_tol": _INF},
    "fid": {"area_weight": 20.0, "smooth_weight": 0.01, "fidelity_tol": 0.05},
    "smooth0.3_fid": {"area_weight": 20.0, "smooth_weight": 0.3, "fidelity_tol": 0.05},
    "smooth1_fid": {"area_weight": 20.0, "smooth_weight": 1.0, "fidelity_tol": 0.05},
    "smooth3_fid": {"area_weight": 20.0, "smooth_weight": 3.0, "fidelity_tol": 0.05},
    "smooth1_area40_fid": {"area_weight": 40.0, "smooth_weight": 1.0, "fidelity_tol": 0.05},
    # issue 19, round 2 (fresh validation subjects): smoother, and smoother with less or more area
    "smooth10": {"area_weight": 20.0, "smooth_weight": 10.0, "fidelity_tol": _INF},
    "smooth3_area10": {"area_weight": 10.0, "smooth_weight": 3.0, "fidelity_tol": _INF},
    "smooth3_area40": {"area_weight": 40.0, "smooth_weight": 3.0, "fidelity_tol": _INF},
    # issue 19, round 3 (fresh validation subjects again): between round 2's held and compact settings
    "smooth1.5": {"area_weight": 20.0, "smooth_weight": 1.5, "fidelity_tol": _INF},
    "smooth2": {"area_weight": 20.0, "smooth_weight": 2.0, "fidelity_tol": _INF},
}
# issue 23: fewer steps (the cosine schedule follows n_steps), or a stopping rule on the objective
for _steps in (40, 60, 80, 100):
    CONFIGS[f"steps{_steps}"] = {**CONFIGS["current"], "n_steps": _steps}
# ... with the step size scaled up by 150 / n_steps, so that the mask can travel as far
for _steps, _lr in ((60, 0.5), (80, 0.375), (100, 0.3)):
    CONFIGS[f"steps{_steps}_lr{_lr:g}"] = {**CONFIGS["current"], "n_steps": _steps, "lr": _lr}
for _tol in (1e-3, 1e-2):
    CONFIGS[f"tol{_tol:g}"] = {**CONFIGS["current"], "tol": _tol, "patience": 10}
for _base in [c for c in CONFIGS if not c.startswith(("steps", "tol"))]:
    CONFIGS[f"{_base}_effect"] = {**CONFIGS[_base], "distance_unit": "effect"}
for _scheme in ("shift", "minimum", "minimum+shift", "blur", "zero"):
    for _base in [c for c in CONFIGS if "/" not in c]:
        CONFIGS[f"{_base}/{_scheme}"] = {**CONFIGS[_base], "fallback": _scheme}

#: Scores of the rule, and whether higher is better.
SCORES: Tuple[Tuple[str, bool], ...] = (("mass_dilated", True), ("auroc", True), ("max_on_target", True),
                                        ("components", False))


def rank_table(df: pd.DataFrame, base: str, max_cost: float = 1.5, fidelity_bound: Optional[float] = 0.1,
               max_components: Optional[float] = None, must_hold: Tuple[str, ...] = ()) -> str:
    """Means per configuration and model, eligibility, mean ranks and the winner, as Markdown.

    Round 1's rule (``fidelity_bound=0.1``): eligible when the time per map is at
    most ``max_cost`` x ``base``'s and the mean fidelity at most the bound on
    every model (dropped when nothing meets it). Round 2's rule
    (``fidelity_bound=None, max_components=3``): the fidelity is reported, not
    gated, and eligible configurations must have a median of at most
    ``max_components`` pieces above half the maximum on every model. Eligible
    configurations are ranked per model on :data:`SCORES`; the smallest mean
    rank wins (ties: the lower time). Round 3's rule adds ``must_hold``: an
    eligible configuration must also hold each of these scores against
    ``base`` on every model (the paired 95 % interval of ``config - base``
    over the same maps reaches 0 or lies on the better side; :func:`held`).

    Examples::

        >>> df = pd.DataFrame({"config": ["a", "b"], "model": ["m", "m"], "mass_dilated": [0.1, 0.2],
        ...                    "auroc": [0.9, 0.95], "max_on_target": [0.0, 1.0], "components": [5, 2],
        ...                    "fidelity": [0.05, 0.05], "seconds_per_map": [1.0, 1.2]})
        >>> "winner: **b**" in rank_table(df, base="a")
        True
    """
    cols = [s for s, _ in SCORES] + ["fidelity", "seconds_per_map"]
    means = df.groupby(["config", "model"], sort=False)[cols].mean()
    medians = df.groupby(["config", "model"], sort=False)["components"].median().rename("components_median")
    means = means.join(medians)
    configs = list(dict.fromkeys(df["config"]))
    models = list(dict.fromkeys(df["model"]))
    cost = df.groupby("config")["seconds_per_map"].mean()
    base_cost = cost.get(base, np.nan)
    worst_fid = means["fidelity"].groupby(level="config").max()
    worst_pieces = means["components_median"].groupby(level="config").max()
    cheap = {c: bool(cost[c] <= max_cost * base_cost) if np.isfinite(base_cost) else True for c in configs}
    faithful = {c: fidelity_bound is None or bool(worst_fid[c] <= fidelity_bound) for c in configs}
    compact = {c: max_components is None or bool(worst_pieces[c] <= max_components) for c in configs}
    use_fid = any(cheap[c] and faithful[c] for c in configs)
    holds = {c: c == base or all(held(df, c, base, s, m) for s in must_hold for m in models) for c in configs}
    eligible = [c for c in configs if cheap[c] and compact[c] and holds[c] and (faithful[c] or not use_fid)]
    ranks = {}
    for m in models:
        for s, higher in SCORES:
            vals = pd.Series({c: means.loc[(c, m), s] for c in eligible if (c, m) in means.index})
            ranks[(m, s)] = vals.rank(ascending=not higher, method="average")
    mean_rank = pd.DataFrame(ranks).mean(axis=1) if ranks else pd.Series(dtype=float)
    lines = ["## Means per configuration and model", "",
             markdown_table(means.reset_index()), "",
             f"## Rule: cost <= {max_cost} x `{base}` ({base_cost:.3g} s/map)"
             + ("" if fidelity_bound is None else f"; mean fidelity <= {fidelity_bound} sigma on every model"
                + ("" if use_fid else " (no configuration meets it: bound dropped)"))
             + ("" if max_components is None else f"; median pieces <= {max_components:g} on every model")
             + ("" if not must_hold else f"; {', '.join(must_hold)} held against `{base}` on every model "
                "(paired 95 % interval)"), ""]
    table = pd.DataFrame({"config": configs, "seconds_per_map": [cost[c] for c in configs],
                          "worst_model_fidelity": [worst_fid[c] for c in configs],
                          "worst_model_median_pieces": [worst_pieces[c] for c in configs],
                          "eligible": [c in eligible for c in configs],
                          "mean_rank": [mean_rank.get(c, np.nan) for c in configs]})
    lines += [markdown_table(table.sort_values(["mean_rank", "seconds_per_map"])), ""]
    if len(mean_rank):
        order = sorted(mean_rank.index, key=lambda c: (mean_rank[c], cost[c]))
        lines.append(f"winner: **{order[0]}**")
    else:
        lines.append("winner: none (no configuration is eligible)")
    return "\n".join(lines)


def held(df: pd.DataFrame, config: str, base: str, score: str, model: str) -> bool:
    """Whether ``config`` holds ``score`` against ``base`` on ``model``'s maps (paired 95 % bootstrap interval).

    Maps are paired by subject and target; held means the interval of
    ``config - base`` reaches 0 or lies on the better side of it.

    Examples::

        >>> df = pd.DataFrame({"config": ["a"] * 3 + ["b"] * 3, "model": ["m"] * 6, "subject": [1, 2, 3] * 2,
        ...                    "target": ["t"] * 6, "auroc": [.9, .8, .7, .8, .7, .6]})
        >>> held(df, "b", "a", "auroc", "m"), held(df, "a", "b", "auroc", "m")
        (False, True)
    """
    keys = ["subject", "target"]
    a = df[(df.config == config) & (df.model == model)].set_index(keys)
    b = df[(df.config == base) & (df.model == model)].set_index(keys)
    common = a.index.intersection(b.index)
    if len(common) < 2:
        return False
    _, lo, hi = paired_bootstrap_ci(a.loc[common, score].to_numpy(), b.loc[common, score].to_numpy())
    higher = dict(SCORES).get(score, True)
    return bool(hi >= 0) if higher else bool(lo <= 0)


def paired_table(df: pd.DataFrame, base: str, held_on: Optional[Tuple[str, ...]] = None) -> str:
    """Each configuration's mean difference from ``base`` on the same maps, with paired 95 % intervals, as Markdown.

    Maps are paired by model, subject and target; the interval is the paired
    bootstrap's (:func:`captum_smocam.benchmarking.scores.paired_bootstrap_ci`).
    A score is *held* when the interval of ``config - base`` reaches 0 or is on
    the better side (the difference is within noise or an improvement);
    ``scores_held`` says whether every score of ``held_on`` (default: all of
    :data:`SCORES`) is held.
    ``seconds_per_map`` is given as the ratio of means to ``base``'s.

    Examples::

        >>> df = pd.DataFrame({"config": ["a"] * 3 + ["b"] * 3, "model": ["m"] * 6, "subject": [1, 2, 3] * 2,
        ...                    "target": ["t"] * 6, "mass_dilated": [.1, .2, .3, .1, .2, .31],
        ...                    "auroc": [.9] * 6, "max_on_target": [1.0] * 6, "components": [2.0] * 6,
        ...                    "fidelity": [.1] * 6, "seconds_per_map": [1.0] * 3 + [0.5] * 3})
        >>> "| b | m | 0.500 | +0.003 [+0.000, +0.010] |" in paired_table(df, "a")
        True
    """
    keys = ["model", "subject", "target"]
    ref = df[df.config == base].set_index(keys)
    rows = []
    for (config, model), part in df[df.config != base].groupby(["config", "model"], sort=False):
        part = part.set_index(keys)
        common = part.index.intersection(ref.index)
        row = {"config": config, "model": model,
               "time_ratio": float(part.loc[common, "seconds_per_map"].mean()
                                   / ref.loc[common, "seconds_per_map"].mean())}
        held = True
        for score, higher in SCORES:
            d, lo, hi = paired_bootstrap_ci(part.loc[common, score].to_numpy(), ref.loc[common, score].to_numpy())
            row[score] = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            if held_on is None or score in held_on:
                held &= (hi >= 0) if higher else (lo <= 0)
        d, lo, hi = paired_bootstrap_ci(part.loc[common, "fidelity"].to_numpy(), ref.loc[common, "fidelity"].to_numpy())
        row["fidelity"] = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        row["scores_held"] = held
        rows.append(row)
    on = "" if held_on is None else f"; `scores_held` on {', '.join(held_on)}"
    return (f"## Against `{base}`, paired over the same maps (difference of means, 95 % bootstrap interval; "
            f"time as a ratio{on})\n\n" + markdown_table(pd.DataFrame(rows)))


#: Grid of :class:`BlockReader`'s layer, and the block its output reads.
BLOCK_SHAPE = (12, 14, 10)
BLOCK = (slice(3, 7), slice(4, 8), slice(3, 6))


class BlockReader(nn.Module):
    """A model whose output reads only the mean features of one known block of its layer (issue 19's test).

    ``conv`` (3³ convolution, 8 channels, ReLU) keeps the input's grid; the output is a linear function of
    the mean of ``conv``'s features over :data:`BLOCK`. On random-texture input of shape
    ``N x 1 x 12 x 14 x 10`` the features are alike everywhere, so a reference made of the scan moved by a
    voxel changes the output very little: a fallback that works must still put the mask on the block.

    Examples::

        >>> net = BlockReader().eval()
        >>> net(torch.rand(2, 1, *BLOCK_SHAPE)).shape
        torch.Size([2, 1])
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv(x)
        return self.head(f[(slice(None), slice(None)) + BLOCK].mean(dim=(2, 3, 4)))


def block_share(mask: torch.Tensor) -> torch.Tensor:
    """Share of each mask's mass (``N x 1 x 12 x 14 x 10``) on :data:`BLOCK`, shape ``N`` (chance: 48/1680).

    Examples::

        >>> m = torch.zeros(1, 1, *BLOCK_SHAPE); m[(0, 0) + BLOCK] = 1.0
        >>> block_share(m).tolist()
        [1.0]
    """
    inside = torch.zeros(BLOCK_SHAPE, dtype=torch.bool)
    inside[BLOCK] = True
    return (mask[:, 0] * inside).flatten(1).sum(1) / mask.flatten(1).sum(1)
