"""Score bundles of one attribution map, and Markdown summaries of many.

The benchmarks score every map with the same bundles: where it points
(:func:`localisation_scores`) and how faithful it is to the model
(:func:`faithfulness_scores`), both built on :mod:`captum_smocam.metrics`.
:func:`summary_table` and :func:`randomization_table` turn the per-map rows
into the tables that ``docs/benchmarks.md`` quotes.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from .. import metrics
from ..methods import METHOD_LABELS

__all__ = ["HIGHER_IS_BETTER", "WIDE_MARGIN_MM", "METHOD_NAMES", "method_label", "localisation_scores",
           "faithfulness_scores", "summary_table", "randomization_table", "paired_bootstrap_ci",
           "best_or_tied_table", "ranks_table", "ranks_markdown", "compactness_table"]

#: Score columns of the per-map tables, with whether a higher value is better.
HIGHER_IS_BETTER = {
    "mass_inside": True,
    "mass_dilated": True,
    "mass_dilated_or_contra": True,
    "mass_within_30mm": True,
    "auroc": True,
    "pointing": True,
    "pointing_dilated": True,
    "max_within_mm": True,
    "max_within_mm_or_contra": True,
    "max_distance_mm": False,
    "n_components": False,
    "hit_top1": True,
    "hit_top3": True,
    "region_rank": False,
    "false_positive_rate": False,
    "side_specificity": True,
    "deletion_auc": True,
    "insertion_auc": False,
    "seconds_per_map": False,
    "peak_rss_mb": False,
}

#: The wide margin of ``mass_within_30mm``: is the mass that misses the structure at least near it?
WIDE_MARGIN_MM = 30.0

#: Display names of the rows a comparison may hold: the methods, and SMOCAM with other references.
METHOD_NAMES = {
    **METHOD_LABELS,
    "smocam_norefs": "SMOCAM (no references)",
    "smocam_scanrefs": "SMOCAM (references from scans)",
}


def method_label(name: str) -> str:
    """The display name of a comparison row (:data:`METHOD_NAMES`), else the name itself.

    Examples::

        >>> method_label("smoothgrad"), method_label("smocam_norefs"), method_label("mine")
        ('SmoothGrad', 'SMOCAM (no references)', 'mine')
    """
    return METHOD_NAMES.get(name, name)


def localisation_scores(attr: np.ndarray, mask: np.ndarray, contra: Optional[np.ndarray],
                        margin_mm: float, spacing, *, labels: Optional[np.ndarray] = None,
                        label: Optional[int] = None, wide_margin_mm: float = WIDE_MARGIN_MM) -> Dict[str, float]:
    """Where one map points: mass, AUROC, pointing, hit rate, false positives, compactness, side.

    Args:
        attr (numpy.ndarray): the map on the structure's grid, ``X x Y x Z``.
        mask (numpy.ndarray): boolean mask of the explained structure.
        contra (numpy.ndarray, optional): its contralateral twin; None (or an
            empty mask) gives ``side_specificity`` = ``nan``, and the
            ``*_or_contra`` scores equal their structure-only versions.
        margin_mm (float): dilation of the structure for ``mass_dilated``,
            ``pointing_dilated``, ``max_within_mm`` and ``false_positive_rate``.
        spacing (float or sequence of float): voxel size in mm.
        labels (numpy.ndarray, optional): the subject's label map, for the hit
            rates; without it they are ``nan``. Default: None
        label (int, optional): the structure's label in ``labels``. Default: None
        wide_margin_mm (float, optional): margin of ``mass_within_30mm``.
            Default: :data:`WIDE_MARGIN_MM`

    Returns:
        dict: ``mass_inside``, ``mass_dilated``, ``mass_within_30mm``,
        ``auroc``, ``pointing``, ``pointing_dilated`` (1.0 or 0.0),
        ``max_distance_mm`` (:func:`captum_smocam.metrics.peak_distance_mm`),
        ``max_within_mm`` (1.0 if that is at most ``margin_mm``: equal to
        ``pointing_dilated`` by construction), ``n_components``,
        ``false_positive_rate``, ``hit_top1``, ``hit_top3`` (1.0 or 0.0),
        ``region_rank``, ``side_specificity``, and the structure-or-contralateral
        ``mass_dilated_or_contra`` and ``max_within_mm_or_contra`` (for
        models trained where the two sides' volumes correlate, whose maps may
        rightly use the other side).

    Examples::

        >>> m = np.zeros((7, 8, 9), bool); m[1:3, 2:4, 2:5] = True
        >>> c = np.zeros_like(m); c[4:6, 2:4, 2:5] = True
        >>> s = localisation_scores(m.astype(float), m, c, margin_mm=2.0, spacing=1.0)
        >>> s["mass_inside"], s["auroc"], s["side_specificity"], s["n_components"], s["max_distance_mm"]
        (1.0, 1.0, 1.0, 1.0, 0.0)
        >>> s = localisation_scores(c.astype(float), m, c, margin_mm=2.0, spacing=1.0)
        >>> s["max_within_mm"], s["max_within_mm_or_contra"], s["mass_dilated_or_contra"]
        (0.0, 1.0, 1.0)
    """
    either = mask | contra if contra is not None and contra.any() else mask
    distance = metrics.peak_distance_mm(attr, mask, spacing)
    within = margin_mm * (1.0 + 1e-9)  # the tolerance of metrics.dilate_mask
    if labels is not None and label is not None:
        rank = metrics.region_rank(attr, labels, int(label))
        hits = {"hit_top1": float(rank <= 1), "hit_top3": float(rank <= 3), "region_rank": float(rank)}
    else:
        hits = {"hit_top1": float("nan"), "hit_top3": float("nan"), "region_rank": float("nan")}
    return {
        "mass_inside": metrics.mass_inside(attr, mask),
        "mass_dilated": metrics.mass_inside_dilated(attr, mask, margin_mm, spacing),
        "mass_within_30mm": metrics.mass_inside_dilated(attr, mask, wide_margin_mm, spacing),
        "auroc": metrics.auroc(attr, mask),
        "pointing": float(metrics.pointing_game(attr, mask)),
        "pointing_dilated": float(metrics.pointing_game(attr, mask, margin_mm=margin_mm, spacing=spacing)),
        "max_distance_mm": distance,
        "max_within_mm": float(distance <= within),
        "n_components": float(metrics.n_components(attr)),
        "false_positive_rate": metrics.false_positive_rate(attr, mask, margin_mm, spacing),
        **hits,
        "side_specificity": (metrics.side_specificity(attr, mask, contra)
                             if contra is not None and contra.any() else float("nan")),
        "mass_dilated_or_contra": metrics.mass_inside_dilated(attr, either, margin_mm, spacing),
        "max_within_mm_or_contra": float(metrics.peak_distance_mm(attr, either, spacing) <= within),
    }


def faithfulness_scores(model, x, attr, target: int, sigma: float, *, random_orderings: int = 0,
                        seed: int = 0, fractions=metrics.DEFAULT_FRACTIONS) -> Dict[str, float]:
    """Deletion and insertion AUC of one map, the baseline being the scan's background value.

    Args:
        model (Module): the regressor.
        x (Tensor): the scan, ``1 x 1 x X x Y x Z``.
        attr (numpy.ndarray): the map, ``X x Y x Z``.
        target (int): the explained output.
        sigma (float): the output's standard deviation (changes are in units of it).
        random_orderings (int, optional): random deletion orders for the
            reference level of an uninformative map. Default: 0 (none)
        seed (int, optional): seed of the random orders. Default: 0
        fractions (sequence of float, optional): fractions of voxels perturbed.
            Default: :data:`captum_smocam.metrics.DEFAULT_FRACTIONS`

    Returns:
        dict: ``deletion_auc``, ``insertion_auc``, ``prediction``,
        ``baseline_prediction``, and with ``random_orderings``
        ``random_deletion_auc`` and ``random_insertion_auc``.

    Examples::

        >>> import torch
        >>> model = lambda t: t.flatten(1).sum(1, keepdim=True)
        >>> x = torch.zeros(1, 1, 2, 2, 2); x[0, 0, 0, 0, 0] = 1.0
        >>> s = faithfulness_scores(model, x, x[0, 0].numpy(), 0, 1.0, fractions=(0.0, 0.5, 1.0))
        >>> s["prediction"], s["baseline_prediction"]
        (1.0, 0.0)
    """
    r = metrics.deletion_insertion(model, x, attr, target, baseline=float(x.min()), fractions=fractions,
                                   output_std=sigma, random_orderings=random_orderings, generator=seed)
    out = {"deletion_auc": r["deletion_auc"], "insertion_auc": r["insertion_auc"],
           "prediction": r["output"], "baseline_prediction": r["baseline_output"]}
    if random_orderings:
        out["random_deletion_auc"] = r["random_deletion_auc"]
        out["random_insertion_auc"] = r["random_insertion_auc"]
    return out


def _mean_sd(values, mean_format: str, sd_format: str) -> str:
    """``mean ± sd`` of the non-missing values (``n/a`` if none; no sd for one value)."""
    v = values.astype(float)
    n = int(v.notna().sum())
    if n == 0:
        return "n/a"
    return f"{v.mean():{mean_format}} ± {v.std(ddof=1):{sd_format}}" if n > 1 else f"{v.mean():{mean_format}}"


def summary_table(df, methods: Sequence[str], targets: Sequence[str], columns: Sequence[str]) -> str:
    """Markdown table of scores, mean ± sd over subjects, one row per target x method; the best mean in bold.

    "Best" follows :data:`HIGHER_IS_BETTER` (a column it does not name counts
    as higher is better); methods tied for the best are all bold, and none is
    when two or more methods all have the same mean.

    Args:
        df (pandas.DataFrame): one row per map, with ``target`` and ``method``
            columns and the score ``columns``.
        methods (sequence of str): methods, in row order.
        targets (sequence of str): targets, in row order.
        columns (sequence of str): the score columns shown.

    Returns:
        str: the table, ending with a newline.

    Examples::

        >>> import pandas as pd
        >>> df = pd.DataFrame({"target": ["t", "t"], "method": ["smocam", "gradcam"], "auroc": [0.9, 0.6]})
        >>> print(summary_table(df, ["smocam", "gradcam"], ["t"], ["auroc"]), end="")
        | target | method | auroc |
        |---|---|---|
        | t | SMOCAM | **0.9** |
        | t | Grad-CAM | 0.6 |
    """
    lines = ["| target | method | " + " | ".join(columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for target in targets:
        sub = df[df["target"] == target]
        best = {}
        for c in columns:
            means = sub[sub["method"].isin(list(methods))].groupby("method")[c].mean().dropna()
            if len(means) == 1 or means.nunique() > 1:  # all that reach the best mean; none when all tie
                top = means.max() if HIGHER_IS_BETTER.get(c, True) else means.min()
                best[c] = set(means.index[means == top])
        for m in methods:
            rows = sub[sub["method"] == m]
            if rows.empty:
                continue
            cells = [_mean_sd(rows[c], ".3g", ".2g") for c in columns]
            cells = [f"**{s}**" if m in best.get(c, ()) else s for c, s in zip(columns, cells)]
            lines.append(f"| {target} | {method_label(m)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def randomization_table(df) -> str:
    """Markdown table of the cascading-randomisation Spearman ρ, mean ± sd per method and step.

    Args:
        df (pandas.DataFrame): one row per map and randomisation step, with
            ``method``, ``step_name``, ``spearman`` and (optionally)
            ``map_constant`` columns.

    Returns:
        str: the table, or ``""`` for no rows.

    Examples::

        >>> import pandas as pd
        >>> df = pd.DataFrame({"method": ["gradcam"] * 2, "step_name": ["top (head)"] * 2,
        ...                    "spearman": [0.1, 0.3], "map_constant": [False, False]})
        >>> print(randomization_table(df).splitlines()[-1])
        | Grad-CAM | top (head) | 0.200 ± 0.14 | 2 | 0 of 2 |
    """
    if df is None or df.empty:
        return ""
    lines = ["| method | randomised | Spearman (mean ± sd) | n | constant maps |", "|---|---|---|---|---|"]
    for (m, step), g in df.groupby(["method", "step_name"], sort=False):
        n = int(g["spearman"].astype(float).notna().sum())
        n_const = int(g["map_constant"].sum()) if "map_constant" in g else 0
        lines.append(f"| {method_label(m)} | {step} | {_mean_sd(g['spearman'], '.3f', '.2f')} | {n} | "
                     f"{n_const} of {len(g)} |")
    return "\n".join(lines) + "\n"


def paired_bootstrap_ci(a, b, *, n_boot: int = 10000, level: float = 0.95, seed: int = 0):
    """Mean of the paired differences ``a - b`` and its percentile bootstrap confidence interval.

    Pairs (e.g. one per subject) are resampled with replacement ``n_boot``
    times (Efron & Tibshirani 1993, percentile interval).

    Args:
        a, b (array-like): paired values, same length ``n >= 2``.
        n_boot (int, optional): resamples. Default: 10000
        level (float, optional): coverage. Default: 0.95
        seed (int, optional): of the resampling. Default: 0

    Returns:
        tuple: ``(mean difference, lower, upper)``.

    Examples::

        >>> d, lo, hi = paired_bootstrap_ci([1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 3.0])
        >>> d, lo, hi
        (1.0, 1.0, 1.0)
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"need two paired 1-D samples of >= 2 values, got shapes {a.shape} and {b.shape}")
    d = a - b
    idx = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))
    means = d[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(d.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def best_or_tied_table(df, method: str, candidates: Sequence[str], targets: Sequence[str],
                       scores: Sequence[str], *, n_boot: int = 10000, seed: int = 0):
    """Is ``method`` the best, or tied with the best, on each target and score? A paired bootstrap over subjects.

    For each target and score the best of ``candidates`` is the one with the
    best mean (:data:`HIGHER_IS_BETTER`); ``method`` is *best* if it is that
    one, *tied* if the 95 % bootstrap interval of its paired difference to
    the best (over the ``subject`` column) includes 0, else *behind*.

    Args:
        df (pandas.DataFrame): one row per map with ``subject``, ``target``,
            ``method`` and the score columns.
        method (str): the method judged.
        candidates (sequence of str): the methods compared (``method`` among them).
        targets, scores (sequence of str): rows of the table.
        n_boot, seed (int, optional): of :func:`paired_bootstrap_ci`.

    Returns:
        pandas.DataFrame: one row per target x score with ``best`` (method),
        ``value`` (mean of ``method``), ``best_value``, ``difference``,
        ``lower``, ``upper`` and ``verdict`` (``best``/``tied``/``behind``).

    Examples::

        >>> import pandas as pd
        >>> df = pd.DataFrame({"subject": [1, 2, 3] * 2, "target": ["t"] * 6, "method": ["a"] * 3 + ["b"] * 3,
        ...                    "auroc": [0.9, 0.8, 0.85, 0.7, 0.6, 0.65]})
        >>> best_or_tied_table(df, "b", ["a", "b"], ["t"], ["auroc"])["verdict"].tolist()
        ['behind']
    """
    import pandas as pd

    rows = []
    sub = df[df["method"].isin(list(candidates))]
    for target in targets:
        for score in scores:
            t = sub[sub["target"] == target].pivot_table(index="subject", columns="method", values=score)
            means = t.mean()
            higher = HIGHER_IS_BETTER.get(score, True)
            best = means.idxmax() if higher else means.idxmin()
            row = {"target": target, "score": score, "best": best, "value": float(means[method]),
                   "best_value": float(means[best])}
            if best == method:
                row.update(difference=0.0, lower=np.nan, upper=np.nan, verdict="best")
            else:
                paired = t[[method, best]].dropna()
                d, lo, hi = paired_bootstrap_ci(paired[method].values, paired[best].values, n_boot=n_boot, seed=seed)
                row.update(difference=d, lower=lo, upper=hi, verdict="tied" if lo <= 0.0 <= hi else "behind")
            rows.append(row)
    return pd.DataFrame(rows)


def ranks_table(df, methods: Sequence[str], targets: Sequence[str], scores: Sequence[str], *,
                reference: str = "smocam", n_boot: int = 10000, seed: int = 0):
    """Per target and score: each method's mean, its interval, its rank, and its paired difference to ``reference``.

    Means are over subjects (the ``subject`` column); the interval of a mean
    is the percentile bootstrap over subjects and the difference to
    ``reference`` the paired bootstrap of :func:`paired_bootstrap_ci` (both
    95 %, ``n_boot`` resamples). Ranks order the means by
    :data:`HIGHER_IS_BETTER` (1 = best; ties share their average rank).

    Args:
        df (pandas.DataFrame): one row per map with ``subject``, ``target``,
            ``method`` and the score columns.
        methods (sequence of str): the methods ranked (those absent from ``df`` are left out).
        targets, scores (sequence of str): the targets and score columns.
        reference (str, optional): the method every other is compared with. Default: ``"smocam"``
        n_boot, seed (int, optional): of the bootstraps.

    Returns:
        pandas.DataFrame: one row per target x score x method with ``n``,
        ``mean``, ``lower``, ``upper``, ``rank``, ``difference`` (method -
        reference), ``diff_lower``, ``diff_upper`` and ``vs_reference``
        (``better``, ``worse`` or ``tied``: whether the paired interval excludes
        0, read in the score's direction; empty for the reference itself).

    Examples::

        >>> import pandas as pd
        >>> df = pd.DataFrame({"subject": [1, 2, 3] * 2, "target": ["t"] * 6, "method": ["a"] * 3 + ["b"] * 3,
        ...                    "auroc": [0.9, 0.8, 0.85, 0.7, 0.6, 0.65]})
        >>> r = ranks_table(df, ["a", "b"], ["t"], ["auroc"], reference="a")
        >>> r[["method", "rank", "vs_reference"]].values.tolist()
        [['a', 1.0, ''], ['b', 2.0, 'worse']]
    """
    import pandas as pd

    rows = []
    for target in targets:
        sub = df[df["target"] == target]
        for score in scores:
            if score not in sub:
                continue
            t = sub.pivot_table(index="subject", columns="method", values=score, dropna=False)
            present = [m for m in methods if m in t.columns and t[m].notna().any()]
            if not present:
                continue
            higher = HIGHER_IS_BETTER.get(score, True)
            means = t[present].mean()
            ranks = means.rank(ascending=not higher, method="average")
            for m in present:
                values = t[m].dropna().to_numpy(dtype=float)
                lo = hi = np.nan
                if values.size >= 2:
                    _, lo, hi = paired_bootstrap_ci(values, np.zeros_like(values), n_boot=n_boot, seed=seed)
                row = {"target": target, "score": score, "method": m, "n": int(values.size),
                       "mean": float(means[m]), "lower": lo, "upper": hi, "rank": float(ranks[m]),
                       "difference": np.nan, "diff_lower": np.nan, "diff_upper": np.nan, "vs_reference": ""}
                if m != reference and reference in present:
                    paired = t[[m, reference]].dropna()
                    if len(paired) >= 2:
                        d, dlo, dhi = paired_bootstrap_ci(paired[m].to_numpy(float), paired[reference].to_numpy(float),
                                                          n_boot=n_boot, seed=seed)
                        good, bad = (dlo > 0, dhi < 0) if higher else (dhi < 0, dlo > 0)
                        row.update(difference=d, diff_lower=dlo, diff_upper=dhi,
                                   vs_reference="better" if good else "worse" if bad else "tied")
                rows.append(row)
    return pd.DataFrame(rows, columns=["target", "score", "method", "n", "mean", "lower", "upper", "rank",
                                       "difference", "diff_lower", "diff_upper", "vs_reference"])


def ranks_markdown(table, reference: str = "smocam") -> str:
    """:func:`ranks_table` as Markdown: one table per score, a row per method, a column per target.

    A cell reads ``mean [95 % interval] #rank``, and for the methods other than
    ``reference`` also ``Δ difference [paired 95 % interval]`` to it.

    Examples::

        >>> import pandas as pd
        >>> t = pd.DataFrame([{"target": "t", "score": "auroc", "method": "a", "n": 3, "mean": 0.85, "lower": 0.8,
        ...                    "upper": 0.9, "rank": 1.0, "difference": float("nan"), "diff_lower": float("nan"),
        ...                    "diff_upper": float("nan"), "vs_reference": ""}])
        >>> print(ranks_markdown(t, reference="a"))
        **auroc** (higher is better)
        <BLANKLINE>
        | method | t |
        |---|---|
        | a | 0.85 [0.8, 0.9] #1 |
        <BLANKLINE>
    """
    if table is None or len(table) == 0:
        return ""
    out = []
    for score, by_score in table.groupby("score", sort=False):
        targets = list(dict.fromkeys(by_score["target"]))
        direction = "higher" if HIGHER_IS_BETTER.get(score, True) else "lower"
        lines = [f"**{score}** ({direction} is better)", "", "| method | " + " | ".join(targets) + " |",
                 "|---|" + "---|" * len(targets)]
        for method, rows in by_score.groupby("method", sort=False):
            cells = []
            for target in targets:
                r = rows[rows["target"] == target]
                if r.empty:
                    cells.append("")
                    continue
                r = r.iloc[0]
                cell = f"{r['mean']:.3g}"
                if np.isfinite(r["lower"]):
                    cell += f" [{r['lower']:.3g}, {r['upper']:.3g}]"
                cell += f" #{r['rank']:g}"
                if method != reference and np.isfinite(r["difference"]):
                    cell += f"; Δ {r['difference']:+.3g} [{r['diff_lower']:+.3g}, {r['diff_upper']:+.3g}]"
                cells.append(cell)
            lines.append(f"| {method_label(method)} | " + " | ".join(cells) + " |")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def compactness_table(df, methods: Sequence[str]):
    """Per method, over all its maps: how often the maximum is on target, how many blobs, the hit rates.

    The quantities of issue 19's criteria ("the maximum within 6 mm of the
    structure in >= 50 % of maps; the median number of components above half
    the maximum <= 3"), pooled over subjects and targets.

    Args:
        df (pandas.DataFrame): one row per map with ``method`` and the
            columns of :func:`localisation_scores`.
        methods (sequence of str): the methods, in row order (absent ones are left out).

    Returns:
        pandas.DataFrame: ``method``, ``maps``, ``max_within_mm`` (share),
        ``max_within_mm_or_contra`` (share), ``median_max_distance_mm``,
        ``mean_max_distance_mm``, ``median_n_components``, ``hit_top1``,
        ``hit_top3`` (rates) and ``false_positive_rate`` (mean).

    Examples::

        >>> import pandas as pd
        >>> df = pd.DataFrame({"method": ["a", "a"], "max_within_mm": [1.0, 0.0], "n_components": [1, 4]})
        >>> compactness_table(df, ["a"])[["maps", "max_within_mm", "median_n_components"]].values.tolist()
        [[2.0, 0.5, 2.5]]
    """
    import pandas as pd

    columns = {"max_within_mm": "mean", "max_within_mm_or_contra": "mean", "max_distance_mm": "median",
               "n_components": "median", "hit_top1": "mean", "hit_top3": "mean", "false_positive_rate": "mean"}
    rows = []
    for m in methods:
        g = df[df["method"] == m]
        if g.empty:
            continue
        row = {"method": m, "maps": float(len(g))}
        for c, how in columns.items():
            if c not in g:
                continue
            v = g[c].astype(float)
            key = {"max_distance_mm": "median_max_distance_mm", "n_components": "median_n_components"}.get(c, c)
            row[key] = float(v.median() if how == "median" else v.mean())
            if c == "max_distance_mm":
                row["mean_max_distance_mm"] = float(v.mean())
        rows.append(row)
    return pd.DataFrame(rows)
