"""Does the report's atypicality find the subjects a model gets wrong? (``benchmarks/report_atypicality.py``).

The cohort is the asymmetry experiment's (:mod:`captum_smocam.benchmarking.asymmetry`):
natural subjects of the correlated cohort and *override* subjects whose
hippocampal asymmetry is set; its *tail* subjects (``abs(level) >= 30 %``) are
those the correlated model fails on. :func:`write_subjects` writes them as a
``smocam cohort`` input folder, :func:`tail_subjects` names the tail, and
:func:`precision_at_k` and :func:`ranking_summary` score a ranking of the
subjects by :func:`captum_smocam.report.atypicality_scores`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Collection, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

__all__ = ["TAIL_MIN_LEVEL", "subject_file_id", "tail_subjects", "write_subjects", "precision_at_k",
           "ranking_summary"]

#: Override subjects with ``abs(level_pct)`` at least this are the tail (docs/asymmetry.md, criterion C3).
TAIL_MIN_LEVEL = 30.0


def subject_file_id(spec: dict) -> str:
    """The subject id ``smocam cohort`` gives the files :func:`write_subjects` writes for a spec (``sub-<index>``).

    Examples::

        >>> subject_file_id({"index": 20050})
        'sub-20050'
    """
    return f"sub-{int(spec['index']):04d}"


def tail_subjects(specs: Sequence[dict], min_level: float = TAIL_MIN_LEVEL) -> List[str]:
    """File ids of the override subjects with ``abs(level_pct) >= min_level``.

    Examples::

        >>> specs = [{"index": 1, "kind": "natural", "level_pct": float("nan")},
        ...          {"index": 2, "kind": "override", "level_pct": -40.0},
        ...          {"index": 3, "kind": "override", "level_pct": 10.0}]
        >>> tail_subjects(specs)
        ['sub-0002']
    """
    return [subject_file_id(s) for s in specs
            if s["kind"] == "override" and abs(float(s["level_pct"])) >= float(min_level)]


def write_subjects(specs: Sequence[dict], folder, *, show_progress: bool = True) -> pd.DataFrame:
    """Write the specs' subjects (``sub-<index>_T1w.nii.gz``, ``_labels.nii.gz``), ``labels.txt`` and ``volumes.csv``.

    Subjects whose two files exist are not generated again, but ``volumes.csv``
    then needs them: the volumes are kept in ``volumes.csv`` and a subject
    missing from it is regenerated.

    Args:
        specs (sequence of dict): from :func:`captum_smocam.benchmarking.asymmetry.build_subject_specs`.
        folder (str or Path): where to write.
        show_progress (bool, optional): tqdm bar. Default: True

    Returns:
        pandas.DataFrame: ``volumes.csv``: ``subject`` then one column per structure (cm³).
    """
    from tqdm.auto import tqdm

    from .. import synth
    from .io import write_csv

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vpath = folder / "volumes.csv"
    known: Dict[str, dict] = {}
    if vpath.is_file():
        known = {str(r["subject"]): r for r in pd.read_csv(vpath).to_dict("records")}
    rows = []
    for spec in tqdm(specs, desc="subjects", disable=not show_progress):
        sid = subject_file_id(spec)
        files = [folder / f"{sid}_T1w.nii.gz", folder / f"{sid}_labels.nii.gz"]
        if sid in known and all(f.is_file() for f in files):
            rows.append(known[sid])
            continue
        s = synth.generate_subject(int(spec["index"]), lr_correlation=float(spec["lr_correlation"]),
                                   cohort_seed=int(spec["cohort_seed"]), overrides=spec["overrides"])
        synth.write_subject(s, folder)
        rows.append({"subject": sid, **{n: s.volumes[n] for n in synth.STRUCTURE_NAMES}})
    synth.write_lut(folder / "labels.txt")
    table = pd.DataFrame(rows, columns=["subject", *synth.STRUCTURE_NAMES])
    write_csv(table, vpath, float_format="%.6f")
    return table


def precision_at_k(scores: pd.Series, positives: Collection, k: Optional[int] = None) -> float:
    """Share of the ``k`` highest-scoring subjects that are ``positives`` (``k`` default: their number).

    Ties are broken by the order of ``scores``; NaN scores rank last.

    Examples::

        >>> s = pd.Series([5.0, 1.0, 4.0, 0.5], index=["a", "b", "c", "d"])
        >>> precision_at_k(s, {"a", "d"})
        0.5
    """
    positives = set(positives)
    k = len(positives) if k is None else int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1 (and there must be positives), got k={k}")
    top = scores.sort_values(ascending=False, kind="mergesort", na_position="last").index[:k]
    return float(sum(s in positives for s in top)) / k


def ranking_summary(scores: pd.Series, positives: Collection, errors: Optional[pd.Series] = None) -> dict:
    """How a ranking by ``scores`` places the ``positives``: precision at k, their ranks, AUC, Spearman with errors.

    Returns:
        dict: ``n``, ``k``, ``precision_at_k``, ``positive_ranks`` (1 = most
        atypical), ``auc`` (probability that a positive outscores a negative,
        ties count half), ``median_positive`` and ``median_negative`` scores,
        and, with ``errors``, ``spearman_abs_error`` (rank correlation of the
        scores with the absolute errors).

    Examples::

        >>> s = pd.Series([5.0, 1.0, 4.0, 0.5], index=["a", "b", "c", "d"])
        >>> ranking_summary(s, {"a", "c"})["auc"]
        1.0
    """
    positives = set(positives)
    order = scores.sort_values(ascending=False, kind="mergesort", na_position="last")
    ranks = {s: i + 1 for i, s in enumerate(order.index)}
    pos = scores[scores.index.isin(positives)].to_numpy(dtype=float)
    neg = scores[~scores.index.isin(positives)].to_numpy(dtype=float)
    auc = float(np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))) \
        if len(pos) and len(neg) else float("nan")
    out = {"n": int(len(scores)), "k": len(positives), "precision_at_k": precision_at_k(scores, positives),
           "positive_ranks": sorted(ranks[s] for s in positives if s in ranks), "auc": auc,
           "median_positive": float(np.median(pos)) if len(pos) else float("nan"),
           "median_negative": float(np.median(neg)) if len(neg) else float("nan")}
    if errors is not None:
        e = errors.reindex(scores.index).abs()
        out["spearman_abs_error"] = float(scores.rank().corr(e.rank()))
    return out
