"""Design and analysis of the hippocampal-asymmetry benchmark (``benchmarks/asymmetry.py``).

Which test subjects it generates (:func:`build_subject_specs`, with volume
factors from :func:`override_factors`), how predicted asymmetries are fitted
on true ones (:func:`fit_line`), and the criteria fixed before the full run
(:func:`evaluate_criteria`, see ``docs/asymmetry.md``).
"""
from __future__ import annotations

from typing import List, Mapping, Optional, Sequence

import numpy as np

__all__ = [
    "LEFT",
    "RIGHT",
    "asymmetry",
    "override_factors",
    "build_subject_specs",
    "fit_line",
    "evaluate_criteria",
]

LEFT, RIGHT = "left_hippocampus", "right_hippocampus"

#: Criteria fixed before the full run (docs/asymmetry.md, "Criteria").
SLOPE_FAIL, SLOPE_OK, SLOPE_GAP = 0.5, 0.7, 0.3
SS_NEAR_HALF, SS_GAP = 0.6, 0.1


def asymmetry(left, right) -> np.ndarray:
    """Right minus left (cm³), element-wise.

    Examples::

        >>> asymmetry([3.0, 4.0], [3.5, 3.0])
        array([ 0.5, -1. ])
    """
    return np.asarray(right, dtype=np.float64) - np.asarray(left, dtype=np.float64)


def override_factors(level_pct: float) -> dict:
    """Hippocampus volume factors giving an asymmetry of ``level_pct`` % of the mean volume.

    ``left = 1 - a/2``, ``right = 1 + a/2`` with ``a = level_pct / 100``, so
    ``(R - L) / ((R + L) / 2) = a`` before the subject's global scale (which
    multiplies both sides).

    Raises:
        ValueError: ``level_pct`` is not in ``(-100, 100)``.

    Examples::

        >>> override_factors(40)
        {'left_hippocampus': 0.8, 'right_hippocampus': 1.2}
    """
    a = float(level_pct) / 100.0
    if not -1.0 < a < 1.0:
        raise ValueError(f"asymmetry level must be in (-100, 100) percent, got {level_pct!r}")
    return {LEFT: round(1.0 - a / 2.0, 10), RIGHT: round(1.0 + a / 2.0, 10)}


def _check_outside(index: int, splits: Mapping, what: str) -> None:
    for name in ("train", "val"):
        a, b = splits[name]
        if a <= index < b:
            raise ValueError(f"{what} index {index} is inside the {name} split [{a}, {b}); use test indices")


def build_subject_specs(metas: Mapping[str, dict], n_natural: int, levels: Sequence[float],
                        tail_offset: int = 50) -> List[dict]:
    """Specs of the test subjects: natural ones of each model's cohort, then one per override level.

    Args:
        metas (mapping): model name -> checkpoint metadata (``splits``,
            ``lr_correlation``, ``cohort_seed``); the first model's cohort
            and test split are used for the override subjects.
        n_natural (int): natural subjects per distinct cohort.
        levels (sequence of float): asymmetries in percent (see :func:`override_factors`).
        tail_offset (int, optional): first test index of the override subjects,
            after the start of the test split. Default: 50

    Returns:
        list of dict: ``subject`` (a name), ``kind`` (``"natural"`` or
        ``"override"``), ``index``, ``lr_correlation``, ``cohort_seed``,
        ``level_pct`` (nan for natural subjects) and ``overrides``.

    Raises:
        ValueError: an index falls in a model's train or val split.

    Examples::

        >>> splits = {"train": [0, 480], "val": [10000, 10060], "test": [20000, 20100]}
        >>> specs = build_subject_specs({"vgg": {"lr_correlation": 0.95, "splits": splits}}, 1, [40])
        >>> [s["subject"] for s in specs]
        ['nat-r0.95-20000', 'asym+40%-20050']
    """
    first = next(iter(metas.values()))
    test0 = int(first["splits"]["test"][0])
    specs = []
    cohorts = []
    for meta in metas.values():
        c = (float(meta["lr_correlation"]), int(meta.get("cohort_seed", 0)))
        if c not in cohorts:
            cohorts.append(c)
    for k, (r, seed) in enumerate(cohorts):
        for i in range(n_natural):
            idx = test0 + k * n_natural + i
            specs.append(dict(subject=f"nat-r{r:g}-{idx}", kind="natural", index=idx, lr_correlation=r,
                              cohort_seed=seed, level_pct=float("nan"), overrides=None))
    r, seed = float(first["lr_correlation"]), int(first.get("cohort_seed", 0))
    for j, level in enumerate(levels):
        idx = test0 + tail_offset + j
        specs.append(dict(subject=f"asym{level:+g}%-{idx}", kind="override", index=idx, lr_correlation=r,
                          cohort_seed=seed, level_pct=float(level), overrides=override_factors(level)))
    for spec in specs:
        for meta in metas.values():
            _check_outside(spec["index"], meta["splits"], spec["subject"])
    return specs


def fit_line(true, pred, n_boot: int = 2000, seed: int = 0) -> dict:
    """Least-squares slope/intercept of ``pred`` on ``true``, Pearson r, and a bootstrap 95 % CI of the slope.

    ``slope_lo95`` / ``slope_hi95``: 2.5th and 97.5th percentiles of the slope over ``n_boot``
    resamples of the (true, pred) pairs with replacement (resamples without spread in ``true``
    are skipped); ``nan`` with fewer than 3 pairs.

    Returns:
        dict: ``n``, ``slope``, ``slope_lo95``, ``slope_hi95``, ``intercept``,
        ``pearson_r`` and ``mae_cm3`` (mean absolute error of ``pred``).

    Examples::

        >>> round(fit_line([0.0, 1.0, 2.0], [1.0, 1.5, 2.0])["slope"], 6)
        0.5
    """
    t, p = np.asarray(true, float), np.asarray(pred, float)
    nan = float("nan")
    if t.size < 2 or np.ptp(t) == 0:
        return {"n": int(t.size), "slope": nan, "slope_lo95": nan, "slope_hi95": nan, "intercept": nan,
                "pearson_r": nan, "mae_cm3": float(np.mean(np.abs(p - t))) if t.size else nan}
    slope, intercept = np.polyfit(t, p, 1)
    r = float(np.corrcoef(t, p)[0, 1]) if np.ptp(p) > 0 else nan
    lo = hi = nan
    if t.size >= 3:
        idx = np.random.default_rng(seed).integers(0, t.size, size=(n_boot, t.size))
        tb, pb = t[idx], p[idx]
        ok = np.ptp(tb, axis=1) > 0
        tc = tb[ok] - tb[ok].mean(1, keepdims=True)
        slopes = (tc * (pb[ok] - pb[ok].mean(1, keepdims=True))).sum(1) / (tc ** 2).sum(1)
        lo, hi = (float(v) for v in np.percentile(slopes, [2.5, 97.5]))
    return {"n": int(t.size), "slope": float(slope), "slope_lo95": lo, "slope_hi95": hi,
            "intercept": float(intercept), "pearson_r": r, "mae_cm3": float(np.mean(np.abs(p - t)))}


def evaluate_criteria(fit_df, att, corr: str, ind: Optional[str]) -> list:
    """The pre-registered checks as ``(criterion, value text, verdict)`` rows (see docs/asymmetry.md).

    Args:
        fit_df (pandas.DataFrame): the fits, with ``model``, ``subset`` and ``slope`` columns.
        att (pandas.DataFrame or None): the maps' scores, with ``model``,
            ``method``, ``level_pct`` and ``side_specificity_density`` columns.
        corr (str): the model trained on correlated volumes.
        ind (str or None): the model trained on independent volumes, if any.

    Returns:
        list of tuple: one row per criterion C1-C4 (C2 and C3 only with
        ``ind``); the verdict is ``"yes"``, ``"no"`` or ``"n/a"`` (a value is missing).
    """
    def slope(model):
        d = fit_df[(fit_df.model == model) & (fit_df.subset == "override")]
        return float(d.slope.iloc[0]) if len(d) else float("nan")

    def ss(model, tail: bool, method="smocam"):
        if att is None or not len(att):
            return float("nan")
        d = att[(att.model == model) & (att.method == method)]
        d = d[d.level_pct.abs() >= 30] if tail else d[d.level_pct == 0]
        return float(d.side_specificity_density.mean()) if len(d) else float("nan")

    def verdict(ok, *values):
        return "n/a" if not all(np.isfinite(v) for v in values) else ("yes" if ok else "no")

    rows = []
    sc = slope(corr)
    rows.append(("C1 correlated model underestimates large asymmetries: override slope < "
                 f"{SLOPE_FAIL}", f"{corr}: {sc:.3f}", verdict(sc < SLOPE_FAIL, sc)))
    if ind is not None:
        si = slope(ind)
        ok = si >= SLOPE_OK and si - sc >= SLOPE_GAP
        rows.append((f"C2 independent model does not: override slope >= {SLOPE_OK} and >= correlated + {SLOPE_GAP}",
                     f"{ind}: {si:.3f}", verdict(ok, si, sc)))
    tc = ss(corr, True)
    if ind is not None:
        ti = ss(ind, True)
        ok = tc <= SS_NEAR_HALF and ti - tc >= SS_GAP
        rows.append((f"C3 SMOCAM cross-hemisphere on tail cases (abs(a) >= 30 %): correlated density SS <= "
                     f"{SS_NEAR_HALF} and independent >= correlated + {SS_GAP}",
                     f"{corr}: {tc:.3f}, {ind}: {ti:.3f}", verdict(ok, tc, ti)))
    c0 = ss(corr, False)
    rows.append((f"C4 ... only where it fails: correlated density SS > {SS_NEAR_HALF} on the 0 % control but "
                 f"<= {SS_NEAR_HALF} on the tail cases", f"{corr}: control {c0:.3f}, tail {tc:.3f}",
                 verdict(c0 > SS_NEAR_HALF and tc <= SS_NEAR_HALF, c0, tc)))
    return rows
