"""The report's HTML page: one section per target (figures embedded as PNG), then the run's settings.

:func:`write_report` reads the run (:func:`captum_smocam.report.run.load_run`),
scores its subjects (:mod:`captum_smocam.report.scores`) and writes one
self-contained file: every figure a base64 PNG, the style sheet inline.
"""
from __future__ import annotations

import base64
import html
import io
import os
import sys
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
import pandas as pd

from .._io import write_text
from .run import CohortRun, DisplayGrid, load_run, read_truth
from .scores import atypicality_scores, region_share_matrix, robust_z

__all__ = ["write_report", "DEFAULT_TOP_K", "TOP_REGIONS"]

#: Subjects whose maps are shown beside the cohort mean, per target, when ``top_k`` is not given.
DEFAULT_TOP_K = 3
#: Regions shown in the region-share chart and table of each target.
TOP_REGIONS = 15
_DPI = 90


def _png(fig) -> str:
    """A matplotlib figure as an ``<img>`` tag with the PNG inline (base64)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _table(df: pd.DataFrame, floatfmt: str = "{:.3g}") -> str:
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "" if not np.isfinite(v) else floatfmt.format(v)
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _r2(pred: np.ndarray, true: np.ndarray) -> float:
    ss_tot = float(((true - true.mean()) ** 2).sum())
    return float("nan") if len(true) < 2 or ss_tot == 0 else 1.0 - float(((pred - true) ** 2).sum()) / ss_tot


_CSS = """
body{font-family:sans-serif;margin:1.5em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #aaa;margin-top:1.6em}h3{margin-bottom:.3em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}th{background:#eee}
img{max-width:100%}.note{color:#555;font-size:.9em}nav a{margin-right:1em}
"""


def _anchor(target: str) -> str:
    from .._io import safe_name

    return "target-" + safe_name(target, "target")


def _mean_map(run: CohortRun, target: str, grid: DisplayGrid, show_progress: bool) -> np.ndarray:
    """The mean of every subject's map of ``target`` on the display grid."""
    from tqdm.auto import tqdm

    total = np.zeros(grid.shape, dtype=np.float64)
    for sid in tqdm(run.subjects, desc=f"report {target}: maps", unit="scan", disable=not show_progress,
                    file=sys.stderr):
        total += grid.load(run.map_path(sid, target))
    return (total / len(run.subjects)).astype(np.float32)


def _regions_part(regions: pd.DataFrame, target: str) -> List[str]:
    """Region shares, mean ± sd over the scans: a bar chart and a table of the largest."""
    from ..plotting import plot_region_attention
    from ..regions import aggregate_region_tables

    tables = [g for _, g in regions.groupby("subject", sort=False)]
    agg = aggregate_region_tables(tables, by="name", columns=("share", "attention_mean"))
    fig = _figure(6.5, 0.8 + 0.28 * min(TOP_REGIONS, len(agg)))
    plot_region_attention(agg, column="share_mean", top=TOP_REGIONS, ax=fig.add_subplot(),
                          title=f"{target}: mean ± sd over {len(tables)} scans")
    shown = agg.head(TOP_REGIONS)[["name", "n", "share_mean", "share_sd", "attention_mean_mean"]]
    return ["<h3>Region shares (mean ± sd)</h3>", _png(fig), _table(shown)]


def _predictions_part(per: pd.DataFrame, target: str, truth: Optional[pd.Series]) -> List[str]:
    """Summary of the predictions; with ``truth`` (adds ``true`` and ``error`` to ``per``) MAE, R², a scatter."""
    stats = {"n": len(per), "mean": per.prediction.mean(), "sd": per.prediction.std(ddof=1),
             "min": per.prediction.min(), "max": per.prediction.max()}
    if truth is None:
        return ["<h3>Predictions</h3>", _table(pd.DataFrame([stats]))]
    per["true"] = truth.reindex(per.subject).to_numpy()
    per["error"] = per.prediction - per.true
    known = per.dropna(subset=["true"])
    stats.update(n_true=len(known), mae=known.error.abs().mean(), bias=known.error.mean(),
                 r2=_r2(known.prediction.to_numpy(), known.true.to_numpy()))
    fig = _figure(4.2, 3.8)
    ax = fig.add_subplot()
    ax.scatter(known.true, known.prediction, s=14, color="tab:blue")
    lo, hi = float(known[["true", "prediction"]].min().min()), float(known[["true", "prediction"]].max().max())
    ax.plot([lo, hi], [lo, hi], color="gray", ls=":", lw=1)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(f"{target}: R² = {stats['r2']:.3f}, MAE = {stats['mae']:.3g}", fontsize=9)
    return ["<h3>Predictions</h3>", _table(pd.DataFrame([stats])), _png(fig)]


def _atypicality_part(per: pd.DataFrame, shares: pd.DataFrame, target: str, top_maps):
    """``(parts, per)``: the score-vs-error scatter and the top subjects beside the mean, and ``per`` with the
    scores, sorted and ranked. ``top_maps(rows)`` draws the comparison figure of the most atypical rows.
    """
    z = robust_z(shares)
    per["atypicality"] = atypicality_scores(shares).to_numpy()
    idx = z.abs().fillna(-1).to_numpy().argmax(axis=1)
    per["most_deviant_region"] = [f"{z.columns[j]} (z = {z.iloc[i, j]:+.1f})" if np.isfinite(z.iloc[i, j])
                                  else "" for i, j in enumerate(idx)]
    per = per.sort_values("atypicality", ascending=False, kind="mergesort", na_position="last")
    per.insert(1, "rank", np.arange(1, len(per) + 1))
    parts = ["<h3>Atypicality</h3><p class=\"note\">Root-mean-square robust z-score of the subject's region "
             "shares against the cohort's median and MAD (docs/report.md): about 1 for a typical attention "
             "profile; high = the model looked elsewhere than for most subjects.</p>"]
    if "error" in per.columns and per["error"].notna().sum() >= 2:
        known = per.dropna(subset=["error", "atypicality"])
        rho = known["atypicality"].rank().corr(known["error"].abs().rank())
        fig = _figure(4.6, 3.8)
        ax = fig.add_subplot()
        ax.scatter(known["atypicality"], known["error"].abs(), s=14, color="tab:red")
        for _, row in known.head(3).iterrows():
            ax.annotate(row["subject"], (row["atypicality"], abs(row["error"])), fontsize=7)
        ax.set_xlabel("atypicality")
        ax.set_ylabel("absolute prediction error")
        ax.set_title(f"{target}: Spearman ρ = {rho:.2f}", fontsize=9)
        parts.append(_png(fig))
    parts += top_maps(per.dropna(subset=["atypicality"]))
    return parts, per


def _target_section(run: CohortRun, target: str, grid: DisplayGrid, bg, truth: Optional[pd.DataFrame], top_k: int,
                    show_progress: bool) -> str:
    """The report's section of one target: mean map, regions, predictions, atypicality, subjects."""
    from ..plotting import plot_attribution, plot_comparison

    subjects = run.subjects
    parts = [f'<h2 id="{_anchor(target)}">{html.escape(target)}</h2>']
    mean = _mean_map(run, target, grid, show_progress)
    fig = _figure(8.6, 3.0)
    plot_attribution(mean, bg, title=f"{target}: cohort mean SMOCAM map (n = {len(subjects)})", figure=fig)
    parts += ["<h3>Cohort mean map</h3>", _png(fig)]

    regions = None if run.regions is None else run.regions[run.regions["target"] == target]
    if regions is not None and len(regions):
        parts += _regions_part(regions, target)
    else:
        parts.append('<p class="note">No region tables for this target (run smocam cohort with --labels): '
                     'no region shares and no atypicality.</p>')

    per = pd.DataFrame({"subject": subjects, "prediction": run.predictions.loc[subjects, target].to_numpy()})
    parts += _predictions_part(per, target, truth[target] if truth is not None and target in truth.columns
                               else None)

    def top_maps(rows: pd.DataFrame) -> List[str]:
        top = rows.head(top_k)
        if not len(top):
            return []
        maps = {f"cohort mean (n = {len(subjects)})": mean}
        for _, row in top.iterrows():
            maps[f"{row['subject']} (atypicality {row['atypicality']:.1f})"] = grid.load(
                run.map_path(row["subject"], target))
        fig = _figure(8.6, 2.3 * len(maps) + 0.6)
        plot_comparison(maps, bg, figure=fig, title=f"{target}: the {len(top)} most atypical subjects")
        return [f"<h3>The {len(top)} most atypical subjects beside the cohort mean</h3>", _png(fig)]

    n_tables = 0 if regions is None else regions["subject"].nunique()
    if n_tables >= 3:
        more, per = _atypicality_part(per, region_share_matrix(regions).reindex(subjects), target, top_maps)
        parts += more
    elif n_tables:
        parts.append(f'<p class="note">Atypicality needs region tables of at least 3 subjects; this target has '
                     f'{n_tables}.</p>')
    parts += ["<h3>Subjects</h3>", _table(per)]
    return "\n".join(parts)


def _references(settings: dict) -> str:
    if settings.get("objective") == "poster":
        return "none (poster objective: F ⊙ M)"
    try:
        from ..pipeline import resolve_model

        n = resolve_model(settings.get("model"))[1].get("n_reference_inputs")
    except Exception:  # the model file may have moved since the run: the report still works
        n = None
    if n:
        return f"the model's {int(n)} reference scans (checkpoint's reference_inputs)"
    return "shifted copies of each scan (the model carries no reference scans), unless the checkpoint is elsewhere"


def _settings_section(run: CohortRun) -> str:
    s = run.settings
    m = run.manifest
    rows = [("model", s.get("model")), ("model file SHA-256 (16)", s.get("model_sha256")), ("layer", s.get("layer")),
            ("targets", ", ".join(run.targets)), ("objective", s.get("objective")), ("steps", s.get("n_steps")),
            ("references", _references(s))]
    rows += [(k, v) for k, v in s.items() if k not in {"model", "model_sha256", "layer", "targets", "objective",
                                                        "n_steps", "method"}]
    rows += [("LUT", m.get("lut")), ("created", m.get("created")), ("processes", m.get("world_size")),
             ("versions", ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items())),
             ("scans", f"{m.get('n_scans')} ({m.get('n_done')} done, {m.get('n_skipped')} complete from an earlier "
                       f"run, {m.get('n_failed')} failed)")]
    table = _table(pd.DataFrame(rows, columns=["setting", "value"]).astype(str))
    parts = ['<h2 id="settings">Settings of the run</h2>', table, '<h2 id="failed">Failed scans</h2>']
    if run.failed:
        parts.append(_table(pd.DataFrame([{"subject": r.get("subject"), "scan": r.get("scan"),
                                           "error": r.get("error")} for r in run.failed])))
    else:
        parts.append("<p>None.</p>")
    if run.incomplete:
        parts.append(f'<p class="note">Complete in the manifest but with files missing now (left out): '
                     f'{html.escape(", ".join(run.incomplete))}</p>')
    notes = [(sid, r["note"]) for sid, r in run.records.items() if r.get("note")]
    if notes:
        parts += ["<h3>Notes</h3>", _table(pd.DataFrame(notes, columns=["subject", "note"]))]
    return "\n".join(parts)


def write_report(
    run_dir: Union[str, os.PathLike],
    out: Optional[Union[str, os.PathLike]] = None,
    truth: Optional[Union[str, os.PathLike]] = None,
    *,
    top_k: int = DEFAULT_TOP_K,
    background: str = "template",
    show_progress: bool = True,
) -> Path:
    """Write one self-contained HTML report of a ``smocam cohort`` run folder.

    Every figure is a PNG embedded in the page (base64 ``data:`` URIs) and the
    style sheet is inline: the file opens in any browser, offline, and can be
    mailed on its own. Sections: per target, the cohort mean map (orthogonal
    views), region shares (mean ± sd), predictions (with ``truth``: errors,
    MAE and R²), the atypicality of each subject (:func:`atypicality_scores`;
    needs region tables) against its absolute error (with ``truth``), the
    ``top_k`` most atypical subjects' maps beside the cohort mean, and a table
    of every subject; then the run's settings and failed scans. Maps are
    brought onto the first subject's map grid (RAS+) in world coordinates.

    Args:
        run_dir (str or Path): the ``--out`` folder of a finished ``smocam cohort`` run.
        out (str or Path, optional): the HTML file. Default: ``<run_dir>/report.html``
        truth (str or Path, optional): CSV with a ``subject`` column and one
            column per target (``volumes.csv`` of ``smocam synth``). Default: None
        top_k (int, optional): atypical subjects shown per target. Default: 3
        background (str, optional): ``"template"`` (nilearn's bundled MNI152,
            2 mm) or a subject id whose scan is drawn under the maps. Default: ``"template"``
        show_progress (bool, optional): tqdm bars while maps are read. Default: True

    Returns:
        Path: the report file.

    Raises:
        FileNotFoundError: no run folder, no manifest, no truth file.
        ValueError: no complete scan or no maps, a truth file matching no
            subject, a bad ``top_k`` or ``background``.

    Examples::

        >>> path = write_report("results", truth="data/volumes.csv")  # doctest: +SKIP
        >>> path.name  # doctest: +SKIP
        'report.html'
    """
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0, got {top_k!r}")
    run = load_run(run_dir)
    truth_df = read_truth(truth, run.subjects, run.targets) if truth is not None else None
    out = Path(out) if out is not None else run.folder / "report.html"
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; expected the report's file name, e.g. {out / 'report.html'}")
    grid = DisplayGrid(run.map_path(run.subjects[0], run.targets[0]))
    bg = grid.background(run, background)
    title = f"SMOCAM cohort report: {run.folder.name}"
    nav = " ".join(f'<a href="#{_anchor(t)}">{html.escape(t)}</a>' for t in run.targets)
    s = run.settings
    intro = (f"<p>{len(run.subjects)} subjects with maps, {len(run.failed)} failed scans; model "
             f"{html.escape(str(s.get('model')))}, layer {html.escape(str(s.get('layer')))}, objective "
             f"{html.escape(str(s.get('objective')))}, {html.escape(str(s.get('n_steps')))} steps. "
             f"Maps drawn over {'the MNI152 template' if background == 'template' else html.escape(background)}."
             + (f" Truth: {html.escape(Path(truth).name)} ({len(truth_df)} subjects)." if truth_df is not None
                else "") + "</p>")
    sections = [_target_section(run, t, grid, bg, truth_df, int(top_k), show_progress) for t in run.targets]
    body = "\n".join([f"<h1>{html.escape(title)}</h1>", intro,
                      f'<nav>{nav} <a href="#settings">settings</a> <a href="#failed">failed scans</a></nav>',
                      *sections, _settings_section(run)])
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")
    return write_text(page, out)
