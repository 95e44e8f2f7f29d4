"""Choose SMOCAM's default objective and settings on VALIDATION subjects (never test).

Configurations (``--model``'s validation subjects, first ``--n-subjects``; every
(subject, target) pair of a configuration runs as one SMOCAM batch):

* ``poster``: the poster's objective with the package's poster defaults, in
  float32 as the package ran it before (the reference the new objective is
  measured against, and the unit of the cost constraint);
* ``base``: the reference-conditioned preservation objective (ours) at
  :data:`BASE` — the settings of the prototype of issue 12 — and then each
  parameter of :data:`GRID` moved alone to each of its other values; then the
  best value of each parameter combined into one more configuration.

Parameters: ``area_weight``, ``smooth_weight``, ``lr``, ``n_steps`` (of
:meth:`captum_smocam.SMOCAM.attribute`), ``layer``, ``reference`` (``train``:
the first ``n_refs`` training scans of the model's cohort, what the shipped
models carry as ``reference_inputs``; ``shift``: the fallback for models without
references, shifted copies of the scan) and ``n_refs``.

Each map is scored on localisation — share of the mass inside the structure
dilated by ``--margin-mm`` (``mass_dilated``) and AUROC — and faithfulness —
deletion AUC (baseline = background value, :data:`SWEEP_FRACTIONS`; higher is
better).

Selection rule (fixed before any of these configurations was run, in the
issue-12 session; printed in the summary):

1. a configuration is *eligible* when its time per map is at most
   ``--max-cost`` (2) times the poster configuration's, measured in the same
   run (a default mask may cost at most 2 x the poster's);
2. among eligible configurations, rank by the mean over maps of each of the
   three scores (1 = best) and keep the smallest mean rank; ties go to the
   lower time (:func:`captum_smocam.benchmarking.sweep.rank_configs`).

Usage::

    python benchmarks/sweep_smocam.py                    # 10 val subjects x 4 targets, ~15 min
    python benchmarks/sweep_smocam.py --model alexnet --no-grid   # the chosen defaults on another model
    python benchmarks/sweep_smocam.py --quick            # 1 subject, 1 target, 2 configs

Writes ``<out-dir>/sweep_smocam<tag>.csv`` (one row per configuration x map) and
``<out-dir>/sweep_summary<tag>.md`` (atomically, after every configuration); a
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
from captum_smocam.benchmarking import (
    POSTER_TARGETS,
    faithfulness_scores,
    load_model,
    load_subject,
    machine_description,
    reference_scans,
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

#: The preservation objective's starting point: the issue-12 prototype's settings.
BASE = {"area_weight": 20.0, "smooth_weight": 0.01, "lr": 0.2, "n_steps": 100, "layer": "default",
        "reference": "train", "n_refs": 8}
#: Values tried for each parameter, one at a time around :data:`BASE`.
GRID = {
    "area_weight": (10.0, 20.0, 40.0),
    "smooth_weight": (0.003, 0.01, 0.03),
    "lr": (0.1, 0.2, 0.4),
    "n_steps": (50, 100, 150),
    "layer": ("features.block2", "default"),  # "default": the checkpoint's default_layer
    "reference": ("train", "shift"),
    "n_refs": (4, 8, 16),
}
#: Deletion fractions of the sweep (coarser than the comparison's, to save forwards).
SWEEP_FRACTIONS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
RULE = ("Selection rule (fixed before the run): eligible = time per map <= {max_cost:g} x the poster "
        "configuration's in this run; among eligible configurations, the smallest mean of the ranks of "
        "mean mass_dilated, AUROC and deletion AUC; ties to the lower time.")


def smocam_kwargs(cfg: dict, refs: dict) -> dict:
    """:meth:`SMOCAM.attribute` arguments of one configuration."""
    if cfg["objective"] == "poster":
        # float32, as the poster's SMOCAM ran before issue 12: the cost unit of the eligibility rule
        return {"objective": "poster", "dtype": torch.float32}
    kw = {k: cfg[k] for k in ("area_weight", "smooth_weight", "lr", "n_steps")}
    kw["n_steps"] = int(kw["n_steps"])
    kw["objective"] = "preserve"
    if cfg["reference"] == "train":
        kw["baselines"] = refs[int(cfg["n_refs"])]
    return kw


def run_config(cfg, model, data, sigma, refs, args):
    """Maps of every (subject, target) for one configuration, scored; returns rows."""
    layer = model.get_submodule(cfg["layer"])
    xs = torch.cat([x for x, *_ in data], dim=0)
    targets = [t for _, t, *_ in data]
    t0 = time.perf_counter()
    maps = attribute_map("smocam", model, xs, targets, layer=layer, output_std=sigma,
                         smocam_kwargs=smocam_kwargs(cfg, refs))
    seconds = (time.perf_counter() - t0) / len(targets)
    rows = []
    for k, (x, tidx, tname, index, mask, spacing) in enumerate(data):
        a = maps[k, 0].numpy()
        r = faithfulness_scores(model, x, a, tidx, sigma[tidx], fractions=SWEEP_FRACTIONS)
        rows.append({
            "config": cfg["name"], "objective": cfg["objective"], **{p: cfg.get(p) for p in GRID},
            "subject": index, "target": tname,
            "mass_dilated": metrics.mass_inside_dilated(a, mask, args.margin_mm, spacing),
            "auroc": metrics.auroc(a, mask),
            "deletion_auc": r["deletion_auc"],
            "uniform": bool(a.max() == a.min()),
            "seconds_per_map": seconds,
        })
    return rows


def summary_table(df, max_cost: float):
    """One row per configuration (means over maps), eligibility and ranks among the eligible."""
    import pandas as pd

    cols = list(SWEEP_SCORES) + ["seconds_per_map"]
    g = df.groupby("config", sort=False)
    summary = g[cols].mean()
    summary["uniform_maps"] = g["uniform"].sum().astype(int)
    for p in ["objective", *GRID]:
        summary[p] = g[p].first()
    summary = summary.reset_index()
    poster = summary.loc[summary["objective"] == "poster", "seconds_per_map"]
    limit = max_cost * float(poster.iloc[0]) if len(poster) else np.inf
    summary["eligible"] = summary["seconds_per_map"] <= limit
    ranked = rank_configs(summary[summary["eligible"]])
    return pd.concat([ranked, summary[~summary["eligible"]]], ignore_index=True)


def to_markdown(ranked, command: str, elapsed: float, n_maps: int, max_cost: float, header: str) -> str:
    lines = [f"Command: `{command}`  ", header + "  ",
             f"Wall time: {elapsed / 60:.1f} min; {n_maps} maps per configuration (validation subjects only).  ",
             RULE.format(max_cost=max_cost) + "\n",
             "| rank | config | area_weight | smooth_weight | lr | n_steps | layer | reference | n_refs | "
             "mass_dilated | AUROC | deletion AUC | s/map | uniform maps | mean rank |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def fmt(v, f="{:g}"):
        return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f.format(v)

    for i, r in enumerate(ranked.itertuples(), start=1):
        rank = str(i) if r.eligible else "not eligible (cost)"
        poster = r.objective == "poster"
        cells = ["poster defaults"] + [""] * 6 if poster else [
            fmt(r.area_weight), fmt(r.smooth_weight), fmt(r.lr), fmt(int(r.n_steps), "{}"), str(r.layer),
            str(r.reference), fmt(int(r.n_refs), "{}") if r.reference == "train" else "—"]
        mean_rank = getattr(r, "mean_rank", float("nan"))
        lines.append(f"| {rank} | {r.config} | " + " | ".join(cells) +
                     f" | {r.mass_dilated:.3f} | {r.auroc:.3f} | {r.deletion_auc:.3f} | {r.seconds_per_map:.2f} | "
                     f"{int(r.uniform_maps)} | {fmt(mean_rank, '{:.2f}')} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vgg", help="shipped model name, checkpoint path, or 'untrained' (dev only)")
    p.add_argument("--n-subjects", type=int, default=10, help="validation subjects")
    p.add_argument("--targets", nargs="+", default=list(POSTER_TARGETS))
    p.add_argument("--margin-mm", type=float, default=6.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-cost", type=float, default=2.0, help="eligible: time per map <= this x the poster's")
    p.add_argument("--no-grid", action="store_true", help="only the poster and the base configuration")
    p.add_argument("--no-combined", action="store_true", help="skip the combined best-per-parameter configuration")
    p.add_argument("--out-dir", default=None,
                   help=f"results folder (default: {RESULTS.relative_to(REPO)}; with --quick {QUICK.relative_to(REPO)})")
    p.add_argument("--quick", action="store_true", help="1 subject, 1 target, poster + base with 5 steps")
    p.add_argument("--base", nargs="+", metavar="KEY=VALUE", default=None,
                   help="start from these values instead of BASE (a second round)")
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
    base = dict(BASE, objective="preserve", **parse_overrides(args.base, GRID, multi=False))
    grid = dict(GRID, **parse_overrides(args.grid, GRID, multi=True))
    layers = {name for name, _ in model.named_modules()}
    resolve = {"default": meta["default_layer"]}
    base["layer"] = resolve.get(base["layer"], base["layer"])
    grid["layer"] = tuple(dict.fromkeys(resolve.get(v, v) for v in grid["layer"] if resolve.get(v, v) in layers))
    poster = dict(base, objective="poster", layer=meta["default_layer"], name="poster")
    configs = [poster] + (one_at_a_time(base, {} if args.no_grid else grid))
    if args.quick:
        args.n_subjects, args.targets, args.no_combined = 1, args.targets[:1], True
        configs = [dict(poster, name="poster"), dict(base, n_steps=5, name="base(5 steps)")]
    refs = {k: reference_scans(meta, k) for k in sorted({int(c["n_refs"]) for c in configs} | set(grid["n_refs"]))}
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
    header = f"Model {args.model}; {machine_description()}"
    # so the first configuration's time carries no start-up cost (eligibility and ties go by time)
    for cfg in (poster, base):
        warm_up(model, data[0][0], data[0][1], ["smocam"], layer=model.get_submodule(cfg["layer"]),
                output_std=sigma, smocam_kwargs=smocam_kwargs(cfg, refs))
    rows = []

    def write(rows):
        df = pd.DataFrame(rows)
        table = summary_table(df, args.max_cost)
        write_csv(df, csv_path)
        write_text(to_markdown(table, command, time.perf_counter() - t_start, len(data), args.max_cost, header),
                   md_path)
        return table

    for cfg in tqdm(configs, desc="configurations", file=sys.stdout):
        rows += run_config(cfg, model, data, sigma, refs, args)
        write(rows)
    if not args.no_combined and not args.no_grid:
        table = write(rows)
        ranked = table[table["eligible"] & (table["objective"] == "preserve")]
        combined = dict(base, name="combined")
        for p in GRID:
            # the value of p whose one-at-a-time configuration ranks best (base counts for its own value)
            cand = ranked[(ranked["config"] == "base") | ranked["config"].str.startswith(f"{p}=")]
            if len(cand):
                combined[p] = type(base[p])(cand.iloc[0][p])
        if any(combined[p] != base[p] for p in GRID):
            combined["name"] = "combined: " + ", ".join(f"{p}={combined[p]}" for p in GRID if combined[p] != base[p])
            rows += run_config(combined, model, data, sigma, refs, args)
    table = write(rows)
    print(md_path.read_text(), flush=True)
    best = table.iloc[0]
    print("chosen: " + best["config"] + " — " + ", ".join(f"{p}={best[p]}" for p in GRID), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
