"""Does ``smocam report``'s atypicality find the subjects whose prediction leans on the other hippocampus?

On the asymmetry experiment's cohort (``benchmarks/asymmetry.py``, ``docs/asymmetry.md``):
``--n-natural`` natural subjects of the correlated cohort (r = 0.95, test
split) and the override subjects whose hippocampal asymmetry is set to
``--levels`` percent. Its *tail* subjects (abs(level) >= 30 %) are those the
correlated model ``vgg`` fails on (predicted asymmetry ~0). Steps:

1. write the subjects as a study folder (scans, label maps, ``labels.txt``,
   ``volumes.csv``) in ``--work-dir``/data (kept: a rerun reuses it);
2. per model, ``smocam cohort`` on the right hippocampus (package defaults,
   resumable) into ``--work-dir``/<model>, and ``smocam report`` with the
   volumes as truth (``<model>/report.html``);
3. rank the subjects by the report's atypicality
   (:func:`captum_smocam.report.atypicality_scores` of the run's region
   tables) and score the ranking: precision at k (k = number of tail
   subjects), the tail subjects' ranks, AUC, Spearman correlation with the
   absolute error of the right-hippocampus prediction.

Writes ``--results`` (Markdown) and the per-subject table beside it (``.csv``).

Usage::

    python benchmarks/report_atypicality.py --threads 1     # 19 subjects, 38 SMOCAM maps: ~5 min on 2 free cores

A model's cohort run can be shared with helper processes (the per-scan locks of ``smocam cohort``), e.g.
``smocam cohort --images <work-dir>/data/scans_list.txt --labels <work-dir>/data/label_maps_list.txt
--model vgg_independent --target right_hippocampus --device cpu --out <work-dir>/vgg_independent``.
    python benchmarks/report_atypicality.py --quick         # smoke test, scratch output only
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from captum_smocam.benchmarking import load_model, markdown_table, write_csv, write_text
from captum_smocam.benchmarking.asymmetry import RIGHT, build_subject_specs
from captum_smocam.benchmarking.atypicality import (
    TAIL_MIN_LEVEL,
    ranking_summary,
    subject_file_id,
    tail_subjects,
    write_subjects,
)
from captum_smocam.cohort import run_cohort
from captum_smocam.report import atypicality_scores, load_run, region_share_matrix, write_report

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ("vgg", "vgg_independent")
DEFAULT_LEVELS = (-40, -30, -20, -10, 0, 10, 20, 30, 40)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                   help="shipped names or checkpoints; the first one's cohort gives the subjects")
    p.add_argument("--n-natural", type=int, default=10, help="natural subjects of the correlated cohort (default 10)")
    p.add_argument("--levels", type=float, nargs="+", default=list(DEFAULT_LEVELS),
                   help="asymmetries (%% of mean hippocampus volume) of the override subjects")
    p.add_argument("--tail-min", type=float, default=TAIL_MIN_LEVEL,
                   help="override subjects with abs(level) >= this are the tail (default 30)")
    p.add_argument("--n-steps", type=int, default=None, help="SMOCAM steps (default: the objective's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="3 natural subjects, levels -40 0 40, 10 steps, scratch output")
    p.add_argument("--work-dir", default=None, help="subjects and cohort runs (default: benchmarks/runs/report_atypicality)")
    p.add_argument("--results", default=None,
                   help="Markdown results (default: benchmarks/results/report_atypicality.md)")
    args = p.parse_args(argv)
    scratch = REPO / "benchmarks" / "runs" / ("quick/report_atypicality" if args.quick else "report_atypicality")
    args.work_dir = Path(args.work_dir or scratch)
    args.results = Path(args.results or (scratch / "report_atypicality_quick.md" if args.quick
                                         else REPO / "benchmarks" / "results" / "report_atypicality.md"))
    if args.quick:
        args.n_natural, args.levels, args.n_steps = 3, [-40.0, 0.0, 40.0], 10
    for name in ("n_natural", "threads", "n_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    metas = {}
    for name in args.models:
        metas[name] = load_model(name)[1]
    first = args.models[0]
    specs = build_subject_specs({first: metas[first]}, args.n_natural, args.levels)
    tail = tail_subjects(specs, args.tail_min)
    if not tail:
        raise SystemExit(f"no override level with abs(level) >= {args.tail_min} among {args.levels}: no tail subjects")
    data = args.work_dir / "data"
    log(f"{len(specs)} subjects ({args.n_natural} natural, {len(specs) - args.n_natural} override; tail {tail}) -> {data}")
    volumes = write_subjects(specs, data)
    truth = volumes.set_index("subject")
    # The cohort's files as list files: helpers can share a model's run (same command on the same --out).
    scans, label_maps = data / "scans_list.txt", data / "label_maps_list.txt"
    write_text("".join(f"{sid}_T1w.nii.gz\n" for sid in volumes["subject"]), scans)
    write_text("".join(f"{sid}_labels.nii.gz\n" for sid in volumes["subject"]), label_maps)

    rows, summaries = [], []
    for name in args.models:
        t0 = time.time()
        out = args.work_dir / name
        res = run_cohort(str(scans), name, RIGHT, labels=str(label_maps), out=out, n_steps=args.n_steps, device="cpu")
        log(f"{name}: cohort {res['n_done']} done, {res['n_skipped']} complete, {res['n_failed']} failed "
            f"in {time.time() - t0:.0f} s")
        report = write_report(out, truth=data / "volumes.csv", show_progress=False)
        log(f"{name}: report {report}")
        run = load_run(out)
        scores = atypicality_scores(region_share_matrix(run.regions, RIGHT))
        pred = run.predictions[RIGHT]
        error = pred - truth.loc[pred.index, RIGHT]
        summary = ranking_summary(scores, tail, error)
        summaries.append({"model": name, **summary})
        by_id = {subject_file_id(s): s for s in specs}
        order = scores.sort_values(ascending=False, kind="mergesort")
        for rank, (sid, score) in enumerate(order.items(), start=1):
            spec = by_id[sid]
            rows.append({"model": name, "subject": sid, "kind": spec["kind"], "level_pct": spec["level_pct"],
                         "tail": sid in tail, "rank": rank, "atypicality": score,
                         "true_right_cm3": truth.loc[sid, RIGHT], "pred_right_cm3": pred[sid],
                         "error_right_cm3": error[sid]})
        log(f"{name}: precision at {summary['k']} = {summary['precision_at_k']:.2f}, tail ranks "
            f"{summary['positive_ranks']}, AUC {summary['auc']:.2f}")
    table = pd.DataFrame(rows)
    write_csv(table, args.results.with_suffix(".csv"), float_format="%.4f")
    summ = pd.DataFrame(summaries)
    summ["positive_ranks"] = summ["positive_ranks"].map(lambda r: ", ".join(map(str, r)))
    cmd = "python benchmarks/report_atypicality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = ["# Atypicality of `smocam report` on the asymmetry cohort (written by benchmarks/report_atypicality.py)",
            "", f"Command: `{cmd}` — {time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, "
            f"{args.threads} thread(s), wall {time.time() - t_start:.0f} s.", "",
            f"Cohort: {args.n_natural} natural subjects of `{first}`'s cohort (test split) and override subjects at "
            f"{', '.join(f'{v:+g} %' for v in args.levels)}; tail (abs(level) >= {args.tail_min:g} %): "
            f"{', '.join(tail)}. Target: {RIGHT}; atypicality from each subject's region shares "
            "(`captum_smocam.report.atypicality_scores`).", "", "## Ranking by atypicality", "",
            markdown_table(summ), "", "## Per subject (most atypical first)", "",
            markdown_table(table), ""]
    write_text("\n".join(text), args.results)
    log(f"wrote {args.results} and {args.results.with_suffix('.csv')} in {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
