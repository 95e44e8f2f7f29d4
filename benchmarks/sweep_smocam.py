"""Tune SMOCAM's defaults on VALIDATION subjects (never test): a one-at-a-time sweep.

Around the provisional defaults of :mod:`captum_smocam.smocam` (``l2_weight``,
``smooth_weight``, ``n_steps``, ``lr``) and the default layer, each parameter is
moved alone to the values in :data:`GRID`; every configuration explains every
(subject, target) pair of the first ``--n-subjects`` validation subjects in one
SMOCAM batch (the prefix is shared per subject), and each map is scored on

* localisation: share of mass inside the structure dilated by ``--margin-mm``
  (``mass_dilated``) and AUROC;
* faithfulness: deletion AUC (baseline = background value, the coarse fractions
  :data:`SWEEP_FRACTIONS`; higher is better).

Selection rule (fixed before looking at the numbers): for each score, rank the
configurations by their mean over maps (1 = best); the chosen configuration has
the smallest mean of its three ranks; ties are broken by the lower wall time.
Then the best value of each parameter is combined into one more configuration,
which is scored and enters the same ranking.

Usage::

    python benchmarks/sweep_smocam.py                 # ~4 val subjects x 4 targets
    python benchmarks/sweep_smocam.py --quick         # 1 subject, 1 target, 2 configs

Writes ``<out-dir>/sweep_smocam.csv`` (one row per configuration x map) and
``<out-dir>/sweep_summary.md`` (atomically, after every configuration); a
``--quick`` run writes ``_quick`` names under ``benchmarks/runs/quick/``
(git-ignored) by default, never over the published results.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from captum_smocam import metrics
from captum_smocam import smocam as smocam_module
from captum_smocam.benchmarking import (
    POSTER_TARGETS,
    faithfulness_scores,
    load_model,
    load_subject,
    split_indices,
    structure_mask,
    voxel_spacing,
    warm_up,
    write_csv,
    write_text,
)
from captum_smocam.benchmarking.sweep import SWEEP_SCORES, one_at_a_time, parse_overrides, rank_configs
from captum_smocam.methods import attribute_map

REPO = Path(__file__).resolve().parents[1]
#: Where the full run's results go (committed), and a quick run's (git-ignored scratch).
RESULTS, QUICK = REPO / "benchmarks" / "results", REPO / "benchmarks" / "runs" / "quick"

#: Values tried for each parameter, one at a time around the base configuration.
GRID = {
    "l2_weight": (0.3, 1.0, 3.0),
    "smooth_weight": (0.01, 0.05, 0.2),
    "n_steps": (50, 100, 200),
    "lr": (0.2, 0.5, 1.0),
    "layer": ("features.block2", "features.block3"),
}
#: Deletion fractions of the sweep (coarser than the comparison's, to save forwards).
SWEEP_FRACTIONS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def base_config(default_layer: str) -> dict:
    """The provisional library defaults (read from captum_smocam.smocam at run time)."""
    return {
        "l2_weight": smocam_module.DEFAULT_L2_WEIGHT,
        "smooth_weight": smocam_module.DEFAULT_SMOOTH_WEIGHT,
        "n_steps": smocam_module.DEFAULT_N_STEPS,
        "lr": smocam_module.DEFAULT_LR,
        "layer": default_layer,
    }


def run_config(cfg, model, data, sigma, args):
    """Maps of every (subject, target) for one configuration, scored; returns rows."""
    layer = model.get_submodule(cfg["layer"])
    xs = torch.cat([x for x, *_ in data], dim=0)
    targets = [t for _, t, *_ in data]
    kwargs = {k: cfg[k] for k in ("l2_weight", "smooth_weight", "n_steps", "lr")}
    t0 = time.perf_counter()
    maps = attribute_map("smocam", model, xs, targets, layer=layer, output_std=sigma, smocam_kwargs=kwargs)
    seconds = (time.perf_counter() - t0) / len(targets)
    rows = []
    for k, (x, tidx, tname, index, mask, spacing) in enumerate(data):
        a = maps[k, 0].numpy()
        r = faithfulness_scores(model, x, a, tidx, sigma[tidx], fractions=SWEEP_FRACTIONS)
        rows.append({
            "config": cfg["name"], **{p: cfg[p] for p in GRID}, "subject": index, "target": tname,
            "mass_dilated": metrics.mass_inside_dilated(a, mask, args.margin_mm, spacing),
            "auroc": metrics.auroc(a, mask),
            "deletion_auc": r["deletion_auc"],
            "uniform": bool(a.max() == a.min()),
            "seconds_per_map": seconds,
        })
    return rows


def summary_table(df) -> "object":
    cols = list(SWEEP_SCORES) + ["seconds_per_map"]
    g = df.groupby("config", sort=False)
    summary = g[cols].mean()
    summary["uniform_maps"] = g["uniform"].sum().astype(int)
    for p in GRID:
        summary[p] = g[p].first()
    return rank_configs(summary.reset_index())


def to_markdown(ranked, command: str, elapsed: float, n_maps: int) -> str:
    lines = [f"Command: `{command}`  ",
             f"Wall time: {elapsed / 60:.1f} min; {n_maps} maps per configuration (validation subjects only).\n",
             "| rank | config | l2_weight | smooth_weight | n_steps | lr | layer | mass_dilated | AUROC | "
             "deletion AUC | s/map | uniform maps | mean rank |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(ranked.itertuples(), start=1):
        lines.append(f"| {i} | {r.config} | {r.l2_weight:g} | {r.smooth_weight:g} | {int(r.n_steps)} | {r.lr:g} | "
                     f"{r.layer} | {r.mass_dilated:.3f} | {r.auroc:.3f} | {r.deletion_auc:.3f} | "
                     f"{r.seconds_per_map:.2f} | {int(r.uniform_maps)} | {r.mean_rank:.2f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vgg", help="shipped model name, checkpoint path, or 'untrained' (dev only)")
    p.add_argument("--n-subjects", type=int, default=4, help="validation subjects")
    p.add_argument("--targets", nargs="+", default=list(POSTER_TARGETS))
    p.add_argument("--margin-mm", type=float, default=6.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-combined", action="store_true", help="skip the combined best-per-parameter configuration")
    p.add_argument("--out-dir", default=None,
                   help=f"results folder (default: {RESULTS.relative_to(REPO)}; with --quick {QUICK.relative_to(REPO)})")
    p.add_argument("--quick", action="store_true", help="1 subject, 1 target, base + one config with 5 steps")
    p.add_argument("--base", nargs="+", metavar="KEY=VALUE", default=None,
                   help="start from these values instead of the library defaults (a second round)")
    p.add_argument("--grid", nargs="+", metavar="KEY=V1,V2", default=None,
                   help="replace the values tried for KEY (the other parameters keep GRID's)")
    p.add_argument("--tag", default="", help="suffix of the output file names, e.g. _round2")
    args = p.parse_args(argv)
    args.out_dir = args.out_dir or str(QUICK if args.quick else RESULTS)  # a quick run never overwrites results
    return args


def main(argv=None) -> int:
    import pandas as pd

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    model, meta = load_model(args.model)
    names = list(meta["output_names"])
    for t in args.targets:
        if t not in names:
            raise SystemExit(f"error: unknown target {t!r}; the model predicts {names}")
    sigma = [float(s) for s in np.atleast_1d(meta["output_std"])]
    base = dict(base_config(meta["default_layer"]), **parse_overrides(args.base, GRID, multi=False))
    grid = dict(GRID, **parse_overrides(args.grid, GRID, multi=True))
    configs = one_at_a_time(base, grid)
    if args.quick:
        args.n_subjects, args.targets, args.no_combined = 1, args.targets[:1], True
        configs = [dict(base, n_steps=5, name="base(5 steps)"), dict(base, n_steps=5, lr=1.0, name="lr=1(5 steps)")]
    data = []
    for index in split_indices(meta, "val", args.n_subjects):
        x, subject = load_subject(index, meta)
        spacing = voxel_spacing(subject)
        for t in args.targets:
            data.append((x, names.index(t), t, index, structure_mask(subject, t), spacing))
    suffix = ("_quick" if args.quick else "") + args.tag
    csv_path = Path(args.out_dir) / f"sweep_smocam{suffix}.csv"
    md_path = Path(args.out_dir) / f"sweep_summary{suffix}.md"
    command = "python benchmarks/sweep_smocam.py " + " ".join(argv if argv is not None else sys.argv[1:])
    warm_up(model, data[0][0], data[0][1], ["smocam"], layer=model.get_submodule(base["layer"]),
               output_std=sigma)  # so the first configuration's time carries no start-up cost (ties go by time)
    rows = []
    for cfg in tqdm(configs, desc="configurations", file=sys.stdout):
        rows += run_config(cfg, model, data, sigma, args)
        df = pd.DataFrame(rows)
        write_csv(df, csv_path)
        write_text(to_markdown(summary_table(df), command, time.perf_counter() - t_start, len(data)),
                             md_path)
    if not args.no_combined:
        ranked = summary_table(pd.DataFrame(rows))
        combined = dict(base, name="combined")
        for p in GRID:
            # the value of p whose one-at-a-time configuration ranks best (base counts for its own value)
            cand = ranked[(ranked["config"] == "base") | ranked["config"].str.startswith(f"{p}=")]
            combined[p] = cand.iloc[0][p]
            if isinstance(base[p], int) and not isinstance(base[p], bool):
                combined[p] = int(combined[p])
            elif isinstance(base[p], float):
                combined[p] = float(combined[p])
        if any(combined[p] != base[p] for p in GRID):
            combined["name"] = "combined: " + ", ".join(f"{p}={combined[p]}" for p in GRID if combined[p] != base[p])
            rows += run_config(combined, model, data, sigma, args)
    df = pd.DataFrame(rows)
    ranked = summary_table(df)
    elapsed = time.perf_counter() - t_start
    md = to_markdown(ranked, command, elapsed, len(data))
    write_csv(df, csv_path)
    write_text(md, md_path)
    print(md, flush=True)
    best = ranked.iloc[0]
    print("chosen: " + ", ".join(f"{p}={best[p]}" for p in GRID), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
