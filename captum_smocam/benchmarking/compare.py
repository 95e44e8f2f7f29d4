"""The report of a method comparison: score tables, ranks with paired intervals, compactness, verdicts.

``benchmarks/compare_methods.py`` writes one row per subject x target x method
(the scores of :func:`~captum_smocam.benchmarking.scores.localisation_scores`
and :func:`~captum_smocam.benchmarking.scores.faithfulness_scores`);
:func:`comparison_report` turns those rows, from one run or several merged
(:func:`merge_rows`), into the Markdown summary and the tables it quotes.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from .scores import (
    best_or_tied_table,
    compactness_table,
    method_label,
    randomization_table,
    ranks_markdown,
    ranks_table,
    summary_table,
)

__all__ = ["SUMMARY_COLUMNS", "FIELD_COLUMNS", "RANK_SCORES", "VERDICT_SCORES", "is_smocam_row", "merge_rows",
           "comparison_report"]

#: The scores of the first summary table (those docs/benchmarks.md has quoted since issue 12).
SUMMARY_COLUMNS = ("mass_inside", "mass_dilated", "auroc", "pointing_dilated", "side_specificity",
                   "deletion_auc", "insertion_auc", "seconds_per_map", "peak_rss_mb")
#: The scores of the second table: the field's (Siegel et al. 2025), compactness, and structure-or-contralateral.
FIELD_COLUMNS = ("hit_top1", "hit_top3", "false_positive_rate", "max_distance_mm", "max_within_mm", "n_components",
                 "mass_within_30mm", "mass_dilated_or_contra", "max_within_mm_or_contra")
#: The scores ranked with paired intervals to SMOCAM.
RANK_SCORES = ("mass_dilated", "auroc", "hit_top1", "hit_top3", "false_positive_rate", "max_within_mm",
               "n_components", "mass_within_30mm", "mass_dilated_or_contra", "max_within_mm_or_contra",
               "deletion_auc", "insertion_auc")
#: The scores of the best-or-tied verdicts (issue 19's criteria: mass within 6 mm and AUROC; and deletion).
VERDICT_SCORES = ("mass_dilated", "auroc", "deletion_auc")


def is_smocam_row(name: str) -> bool:
    """Whether a comparison row is the default SMOCAM with some references (not the poster's objective).

    Examples::

        >>> is_smocam_row("smocam_norefs"), is_smocam_row("smocam_poster"), is_smocam_row("gradcam")
        (True, False, False)
    """
    return name == "smocam" or (name.startswith("smocam_") and name != "smocam_poster")


def merge_rows(frames: Sequence) -> "object":
    """Concatenate per-map tables of several runs; a later run's row replaces an earlier one for the same map.

    A map is a ``(subject, target, method)``; so a run of ``--methods smocam``
    alone can be summarised with the other methods of an earlier run.

    Examples::

        >>> import pandas as pd
        >>> a = pd.DataFrame({"subject": [1, 1], "target": ["t", "t"], "method": ["smocam", "gradcam"],
        ...                   "auroc": [0.5, 0.6]})
        >>> b = pd.DataFrame({"subject": [1], "target": ["t"], "method": ["smocam"], "auroc": [0.9]})
        >>> merge_rows([a, b])[["method", "auroc"]].values.tolist()
        [['smocam', 0.9], ['gradcam', 0.6]]
    """
    import pandas as pd

    if not frames:
        raise ValueError("no tables to merge")
    df = pd.concat(list(frames), ignore_index=True)
    last = df.drop_duplicates(["subject", "target", "method"], keep="last")
    order = df.drop_duplicates(["subject", "target", "method"], keep="first").index
    key = df.loc[order, ["subject", "target", "method"]].apply(tuple, axis=1).tolist()
    return last.set_index(["subject", "target", "method"]).loc[key].reset_index()[df.columns]


def comparison_report(df, rows: Sequence[str], targets: Sequence[str], *, baselines: Sequence[str],
                      randomization=None, seed: int = 0, n_boot: int = 10000) -> Tuple[str, Dict[str, object]]:
    """The Markdown summary of a comparison, and its tables.

    Args:
        df (pandas.DataFrame): one row per map (``subject``, ``target``,
            ``method`` and the score columns).
        rows (sequence of str): the methods (and SMOCAM variants) in table order.
        targets (sequence of str): the targets, in table order.
        baselines (sequence of str): the methods each SMOCAM row is judged
            against (best-or-tied verdicts; :func:`is_smocam_row` picks the SMOCAM rows).
        randomization (pandas.DataFrame, optional): the cascading-randomisation rows.
        seed, n_boot (int, optional): of the bootstraps.

    Returns:
        tuple: ``(markdown, tables)``; ``tables`` has ``"ranks"``
        (:func:`~captum_smocam.benchmarking.scores.ranks_table`), ``"compactness"``
        and, with at least two subjects and a baseline, ``"verdicts"`` (one
        :func:`~captum_smocam.benchmarking.scores.best_or_tied_table` per SMOCAM row,
        its name in column ``smocam``).
    """
    import pandas as pd

    rows = [r for r in rows if (df["method"] == r).any()]
    have = set(df.columns)
    parts: List[str] = []
    tables: Dict[str, object] = {}
    cols = [c for c in SUMMARY_COLUMNS if c in have]
    parts.append("Scores, mean ± sd over subjects (best mean in bold):\n\n" + summary_table(df, rows, targets, cols))
    field = [c for c in FIELD_COLUMNS if c in have]
    if field:
        parts.append("The field's scores (hit rate top-1/top-3 and false-positive rate, Siegel et al. 2025), "
                     "compactness, and structure-or-contralateral scores, mean ± sd over subjects:\n\n"
                     + summary_table(df, rows, targets, field))
    if {"random_deletion_auc", "random_insertion_auc"} <= have:
        ref = df.groupby("target")[["random_deletion_auc", "random_insertion_auc"]].mean()
        cells = "".join(f"| {t} | {r.random_deletion_auc:.3g} | {r.random_insertion_auc:.3g} |\n"
                        for t, r in ref.iterrows())
        parts.append("Random-order reference (mean over subjects):\n\n| target | deletion AUC | insertion AUC |\n"
                     "|---|---|---|\n" + cells)
    if randomization is not None and len(randomization):
        parts.append("Cascading randomisation (Spearman of |map| to the original):\n\n"
                     + randomization_table(randomization))
    compact = compactness_table(df, rows)
    tables["compactness"] = compact
    if len(compact):
        lines = ["| method | maps | max within margin | max within margin, either side | median max distance (mm) "
                 "| median blobs | hit top-1 | hit top-3 | false-positive rate |", "|---|" + "---|" * 8]
        for r in compact.to_dict("records"):
            def cell(key, fmt=".2f"):
                v = r.get(key)
                return "n/a" if v is None or v != v else format(v, fmt)
            lines.append(f"| {method_label(r['method'])} | {int(r['maps'])} | {cell('max_within_mm')} | "
                         f"{cell('max_within_mm_or_contra')} | {cell('median_max_distance_mm', '.1f')} | "
                         f"{cell('median_n_components', '.1f')} | {cell('hit_top1')} | {cell('hit_top3')} | "
                         f"{cell('false_positive_rate', '.3g')} |")
        parts.append("Compactness over all maps (issue 19: maximum within 6 mm in >= 50 % of maps, median "
                     "blobs above half the maximum <= 3):\n\n" + "\n".join(lines) + "\n")
    smocam_rows = [r for r in rows if is_smocam_row(r)]
    reference = smocam_rows[0] if smocam_rows else rows[0]
    ranks = ranks_table(df, rows, targets, [s for s in RANK_SCORES if s in have], reference=reference,
                        n_boot=n_boot, seed=seed)
    tables["ranks"] = ranks
    if len(ranks):
        parts.append(f"Ranks per target (mean [95 % bootstrap interval over subjects] #rank; Δ: paired difference "
                     f"to {method_label(reference)} [95 % paired bootstrap interval]):\n\n"
                     + ranks_markdown(ranks, reference=reference))
    judged = [b for b in baselines if b in rows and not is_smocam_row(b)]
    if smocam_rows and judged and df["subject"].nunique() > 1:
        verdicts = []
        for s in smocam_rows:
            v = best_or_tied_table(df, s, [s, *judged], targets, [c for c in VERDICT_SCORES if c in have],
                                   n_boot=n_boot, seed=seed)
            v.insert(0, "smocam", s)
            verdicts.append(v)
        verdicts = pd.concat(verdicts, ignore_index=True)
        tables["verdicts"] = verdicts
        lines = ["| SMOCAM | target | score | best | SMOCAM | best's | difference [95 % CI] | verdict |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in verdicts.itertuples():
            ci = "—" if r.verdict == "best" else f"{r.difference:+.3g} [{r.lower:+.3g}, {r.upper:+.3g}]"
            lines.append(f"| {method_label(r.smocam)} | {r.target} | {r.score} | {method_label(r.best)} | "
                         f"{r.value:.3g} | {r.best_value:.3g} | {ci} | {r.verdict} |")
        parts.append(f"SMOCAM against the best of {', '.join(method_label(m) for m in judged)} (paired 95 % bootstrap "
                     "interval of the mean difference over subjects; tied if it holds 0):\n\n"
                     + "\n".join(lines) + "\n")
    if "reference_source" in have:
        used = df[df["method"].map(is_smocam_row)].groupby("method")["reference_source"].unique()
        if len(used):
            parts.append("References SMOCAM used:\n\n" + "".join(
                f"- {method_label(m)}: {'; '.join(str(v) for v in vals)}\n" for m, vals in used.items()))
    return "\n".join(parts), tables
