"""Benchmark SMOCAM against Grad-CAM, Occlusion, Saliency, SmoothGrad, DeepLIFT and IG where the truth is known.

The shipped VGG3D regressor (``captum_smocam.models.load_default_model("vgg")``)
predicts the volume of every structure of the synthetic cohort
(:mod:`captum_smocam.synth`), so for each explained output we know which voxels
*should* matter: the structure itself (and, for a paired structure, not its
contralateral twin). On the subjects of one split (``--split``, test by
default), for each target and method, the map comes from
:func:`captum_smocam.methods.attribute_map` (the one place the methods are
configured) and is scored with :mod:`captum_smocam.metrics`:

* localisation: mass inside the structure, inside the structure dilated by
  ``--margin-mm``, AUROC, pointing game (strict and within the margin);
* the field's scores (Siegel et al. 2025): hit rate top-1/top-3 among the
  label map's regions, false-positive rate;
* compactness: distance of the maximum to the structure (within the margin
  or not), blobs above half the maximum, mass within 30 mm;
* side specificity against the contralateral structure, and the
  structure-or-contralateral mass and maximum (for r = 0.95 models);
* faithfulness: deletion/insertion AUC (baseline = background value) with a
  random-ordering reference computed once per subject and target;
* cost: wall time per map and peak resident-memory increase during the call;
* sanity (on ``--randomization-subjects`` subjects): Adebayo et al.'s cascading
  randomisation, Spearman correlation to the original map after randomising the
  head (top) and then every layer (all).

SMOCAM can be scored against several references in one run
(``--smocam-references model none scans:DIR``: the model's own, none -- the
fallback --, and K built from the scans in DIR as ``smocam references`` builds
them; rows ``smocam``, ``smocam_norefs``, ``smocam_scanrefs``); the other
methods run once.

Usage (the default run, ~20 test subjects x 4 targets x 8 methods)::

    python benchmarks/compare_methods.py
    python benchmarks/compare_methods.py --quick      # 1 subject, 1 target, < 3 min
    python benchmarks/compare_methods.py --split val --methods smocam --smocam-references model none
    python benchmarks/compare_methods.py --summary runs/a/compare_methods.csv runs/b/compare_methods.csv

Results: ``<out-dir>/compare_methods.csv`` (one row per subject x target x
method), ``<out-dir>/compare_randomization.csv``, ``<out-dir>/compare_summary.md``
(mean ± sd over subjects, ranks with paired bootstrap intervals, compactness,
verdicts), ``compare_ranks.csv``, ``compare_compactness.csv``,
``compare_verdicts.csv`` and the comparison figure. CSVs are written atomically
after every subject, so an interrupted run keeps what it finished. ``--summary``
rewrites the summary from per-map CSVs without computing anything (rows of a
later CSV replace those of an earlier one for the same map). A ``--quick`` run
writes ``_quick`` names under ``benchmarks/runs/quick/`` (git-ignored) by
default, and a run on another split than test under ``benchmarks/runs/<split>/``,
never over the published results and figure.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from captum_smocam import metrics
from captum_smocam.benchmarking import (
    POSTER_TARGETS,
    PeakMemory,
    contralateral,
    faithfulness_scores,
    load_model,
    load_subject,
    localisation_scores,
    machine_description,
    method_label,
    save_figure,
    split_indices,
    structure_label,
    structure_mask,
    voxel_spacing,
    warm_up,
    write_csv,
    write_text,
)
from captum_smocam.benchmarking.compare import comparison_report, merge_rows
from captum_smocam.benchmarking.variants import REFERENCE_SPECS, smocam_variants
from captum_smocam.methods import (
    DEFAULT_IG_STEPS,
    DEFAULT_OCCLUSION_STRIDE,
    DEFAULT_OCCLUSION_WINDOW,
    DEFAULT_SMOOTHGRAD_SAMPLES,
    METHODS,
    attribute_map,
    method_settings,
    occlusion_evaluations,
)
from captum_smocam.references import DEFAULT_K, describe_references

REPO = Path(__file__).resolve().parents[1]
#: Where the full run's results go (committed), and a quick run's (git-ignored scratch).
RESULTS, QUICK = REPO / "benchmarks" / "results", REPO / "benchmarks" / "runs" / "quick"
FIGURE = "comparison_right_lateral_ventricle.png"

#: The targets of the default run (the poster's structures).
DEFAULT_TARGETS = POSTER_TARGETS
#: The methods of the default run: SMOCAM, the poster's, and the six it is compared with.
DEFAULT_METHODS = ("smocam", "smocam_poster", "gradcam", "occlusion", "saliency", "smoothgrad", "deeplift",
                   "integrated_gradients")
#: The methods SMOCAM is ranked among (issue 19: the field's strongest baselines; the poster's SMOCAM is shown
#: for reference).
RANKED_METHODS = ("smocam", "gradcam", "occlusion", "saliency", "smoothgrad", "deeplift", "integrated_gradients")
#: Fractions of the deletion/insertion curves (those of docs/metrics.md).
FRACTIONS = metrics.DEFAULT_FRACTIONS


# --------------------------------------------------------------------------- maps
def compute_maps(method: str, model, x, targets: Sequence[int], *, layer, output_std,
                 smocam_kwargs=None, occlusion_window=DEFAULT_OCCLUSION_WINDOW,
                 occlusion_stride=DEFAULT_OCCLUSION_STRIDE, record=None, **settings):
    """Maps of one scan for several targets, with the wall time and peak memory of producing them.

    SMOCAM explains the K targets in one batch (the scan repeated K times, the
    prefix computed once: how :mod:`captum_smocam.pipeline` uses it); the other
    methods run once per target. ``record`` (a dict) is filled by
    :func:`attribute_map` (the settings used; SMOCAM's references);
    ``settings`` are further arguments of :func:`attribute_map`
    (``smoothgrad_samples``, ``ig_steps``). Returns
    ``(maps K x X x Y x Z numpy, seconds per map, peak MiB of one call, maps per call)``.
    """
    kw = dict(layer=layer, output_std=output_std, smocam_kwargs=smocam_kwargs,
              occlusion_window=occlusion_window, occlusion_stride=occlusion_stride, record=record, **settings)
    if method.startswith("smocam"):
        xs = x.expand(len(targets), *x.shape[1:]).contiguous()
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            maps = attribute_map(method, model, xs, list(targets), **kw)
            seconds = time.perf_counter() - t0
        return maps[:, 0].numpy(), seconds / len(targets), mem.peak_mb, len(targets)
    out, seconds, peak = [], 0.0, 0.0
    for t in targets:
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            out.append(attribute_map(method, model, x, int(t), **kw)[0, 0].numpy())
            seconds += time.perf_counter() - t0
        peak = np.nanmax([peak, mem.peak_mb])
    return np.stack(out), seconds / len(targets), float(peak), 1


def cost_only(args, model, index, meta, target_idx, method_kw) -> int:
    """Time every method (and Occlusion at several windows) on one subject, twice; write method_cost.csv.

    With SMOCAM among the methods, it is also timed on its hook path
    (``smocam_hook``: ``fast=False``, the whole network every step), the path
    a model that torch.fx cannot trace gets; with the poster's SMOCAM, it is
    also timed in float32 (``smocam_poster_float32``: the poster objective in
    the model's own dtype, as the package ran it before the poster moved to
    float64 for reproducibility), so that the default's cost is a ratio
    measured side by side.
    """
    import pandas as pd

    x, _ = load_subject(index, meta)
    settings = [(m, args.occlusion_window, args.occlusion_stride) for m in args.methods]
    if "smocam" in args.methods:
        settings.insert(args.methods.index("smocam") + 1, ("smocam_hook", 0, 0))
    if "smocam_poster" in args.methods:
        settings.insert([m for m, _, _ in settings].index("smocam_poster") + 1, ("smocam_poster_float32", 0, 0))
    for spec in args.cost_only:
        w, s = (int(v) for v in spec.split(":"))
        settings.append(("occlusion", w, s))
    rows = []
    for rep in range(2):
        for method, w, s in tqdm(settings, desc=f"cost, repeat {rep + 1}", file=sys.stdout):
            kw = dict(method_kw, occlusion_window=w, occlusion_stride=s)
            if method == "smocam_hook":
                kw["smocam_kwargs"] = dict(kw.get("smocam_kwargs") or {}, fast=False)
                _, sec, peak, per = compute_maps("smocam", model, x, target_idx, **kw)
            elif method == "smocam_poster_float32":
                kw["smocam_kwargs"] = dict(kw.get("smocam_kwargs") or {}, dtype=torch.float32)
                _, sec, peak, per = compute_maps("smocam_poster", model, x, target_idx, **kw)
            else:
                targets = target_idx if method.startswith("smocam") else target_idx[:1]
                _, sec, peak, per = compute_maps(method, model, x, targets, **kw)
            rows.append({"repeat": rep + 1, "method": method, "window": w if method == "occlusion" else None,
                         "stride": s if method == "occlusion" else None,
                         "evaluations": occlusion_evaluations(tuple(x.shape[2:]), w, s) if method == "occlusion"
                         else None, "seconds_per_map": sec, "peak_rss_mb": peak, "maps_per_call": per})
    df = pd.DataFrame(rows)
    write_csv(df, Path(args.out_dir) / ("method_cost_quick.csv" if args.quick else "method_cost.csv"))
    print(df.to_string(index=False), flush=True)
    return 0


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vgg", help="shipped model name, checkpoint path, or 'untrained' (dev only)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test",
                   help="the subjects scored (default: test; val for tuning, whose results go to benchmarks/runs/val)")
    p.add_argument("--val", dest="split", action="store_const", const="val", help="the same as --split val")
    p.add_argument("--n-subjects", type=int, default=20, help="subjects (from the start of the split)")
    p.add_argument("--targets", nargs="+", default=list(DEFAULT_TARGETS))
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    p.add_argument("--smocam-references", nargs="+", default=["model"], metavar="REFS",
                   help="references SMOCAM is scored with, one row each: model (its own; row smocam), none "
                        "(the fallback; smocam_norefs), scans:PATH (K built from the NIfTI scans in PATH as "
                        "'smocam references' builds them; smocam_scanrefs). Default: model")
    p.add_argument("--reference-k", type=int, default=DEFAULT_K, help=f"K of scans:PATH (default: {DEFAULT_K})")
    p.add_argument("--reference-seed", type=int, default=0, help="seed of the draw of K scans (default: 0)")
    p.add_argument("--layer", default=None, help="layer for SMOCAM and Grad-CAM (default: the checkpoint's)")
    p.add_argument("--margin-mm", type=float, default=6.0,
                   help="dilation of the structure for mass_dilated, max_within_mm and the false-positive rate")
    p.add_argument("--random-orderings", type=int, default=2, help="random deletion orders per subject x target")
    p.add_argument("--randomization-subjects", type=int, default=None,
                   help="subjects for the cascading randomisation check (0: skip; default 2, with --quick 1)")
    p.add_argument("--randomization-targets", nargs="+", default=["right_lateral_ventricle", "right_hippocampus"])
    p.add_argument("--occlusion-window", type=int, default=DEFAULT_OCCLUSION_WINDOW)
    p.add_argument("--occlusion-stride", type=int, default=DEFAULT_OCCLUSION_STRIDE)
    p.add_argument("--smocam-steps", type=int, default=None,
                   help="override SMOCAM's n_steps (default: library default)")
    p.add_argument("--smoothgrad-samples", type=int, default=DEFAULT_SMOOTHGRAD_SAMPLES,
                   help=f"SmoothGrad's noisy copies (default: {DEFAULT_SMOOTHGRAD_SAMPLES}; --quick: 10)")
    p.add_argument("--ig-steps", type=int, default=DEFAULT_IG_STEPS,
                   help=f"Integrated Gradients' steps (default: {DEFAULT_IG_STEPS}; --quick: 10)")
    p.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS),
                   help="deletion/insertion fractions (default: those of docs/metrics.md)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=None,
                   help=f"results folder (default: {RESULTS.relative_to(REPO)}; with --quick "
                        f"{QUICK.relative_to(REPO)}; "
                        "on another split than test benchmarks/runs/<split>)")
    p.add_argument("--figure", default=None,
                   help=f"comparison figure (first subject, right lateral ventricle); '' to skip (default: "
                        f"docs/figures/{FIGURE}; with --quick or another split <out-dir>/{FIGURE})")
    p.add_argument("--cost-only", nargs="*", metavar="WINDOW:STRIDE", default=None,
                   help="only time every method on the first subject (all targets), plus Occlusion at each "
                        "WINDOW:STRIDE given; writes <out-dir>/method_cost.csv")
    p.add_argument("--summary", nargs="*", metavar="CSV", default=None,
                   help="compute nothing: write the summary from per-map CSVs (default: <out-dir>'s "
                        "compare_methods.csv); a later CSV's rows replace an earlier one's for the same map")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 subject, right lateral ventricle, cheap settings (< 3 min)")
    args = p.parse_args(argv)
    if args.quick:
        args.n_subjects = 1
        args.targets = ["right_lateral_ventricle"]
        args.random_orderings = 1
        args.fractions = [0.0, 0.1, 0.5, 1.0]
        args.randomization_subjects = 1 if args.randomization_subjects is None else args.randomization_subjects
        args.randomization_targets = ["right_lateral_ventricle"]
        args.smocam_steps = args.smocam_steps or 10
        args.occlusion_window, args.occlusion_stride = 24, 24
        args.smoothgrad_samples, args.ig_steps = 10, 10
    args.randomization_subjects = 2 if args.randomization_subjects is None else args.randomization_subjects
    # A quick run, or one on another split, never writes over the published results.
    scratch = QUICK if args.quick else (REPO / "benchmarks" / "runs" / args.split if args.split != "test" else None)
    args.out_dir = args.out_dir or str(scratch or RESULTS)
    if args.figure is None:
        args.figure = (str(Path(args.out_dir) / FIGURE.replace(".png", "_quick.png" if args.quick else ".png"))
                       if scratch is not None else str(REPO / "docs" / "figures" / FIGURE))
    for spec in args.smocam_references:
        if not (spec in ("model", "none") or (spec.startswith("scans:") and len(spec) > 6)):
            p.error(f"--smocam-references: unknown {spec!r}; expected some of {', '.join(REFERENCE_SPECS)}")
    return args


def write_summary(df, rnd, args, header: str, suffix: str) -> str:
    """Write compare_summary, compare_ranks, compare_compactness and compare_verdicts into ``--out-dir``."""
    out_dir = Path(args.out_dir)
    rows = list(dict.fromkeys(df["method"]))
    targets = [t for t in args.targets if t in set(df["target"])] or list(dict.fromkeys(df["target"]))
    text, tables = comparison_report(df, rows, targets, baselines=[m for m in RANKED_METHODS if m != "smocam"],
                                     randomization=rnd, seed=args.seed)
    for name, table in tables.items():
        if len(table):
            write_csv(table, out_dir / f"compare_{name}{suffix}.csv")
    summary = header + "\n\n" + text
    write_text(summary, out_dir / f"compare_summary{suffix}.md")
    return summary


def summary_only(args, argv) -> int:
    """``--summary``: the report of per-map CSVs already written, nothing computed."""
    import pandas as pd

    suffix = "_quick" if args.quick else ""
    paths = [Path(p) for p in args.summary] or [Path(args.out_dir) / f"compare_methods{suffix}.csv"]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"error: no such CSV: {missing[0]}")
    df = merge_rows([pd.read_csv(p) for p in paths])
    rnd_path = Path(args.out_dir) / f"compare_randomization{suffix}.csv"
    rnd = pd.read_csv(rnd_path) if rnd_path.is_file() and not args.summary else None
    header = (f"Command: `python benchmarks/compare_methods.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
              f"  \nSummary of {', '.join(str(p) for p in paths)}: {df['subject'].nunique()} subjects, "
              f"{len(df)} maps; margin {args.margin_mm:g} mm (as scored)")
    print(write_summary(df, rnd, args, header, suffix), flush=True)
    return 0


def main(argv=None) -> int:
    import pandas as pd

    args = parse_args(argv)
    if args.summary is not None:
        return summary_only(args, argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    model, meta = load_model(args.model)
    names = list(meta["output_names"])
    for t in args.targets + args.randomization_targets:
        if t not in names:
            raise SystemExit(f"error: unknown target {t!r}; the model predicts {names}")
    for m in args.methods:
        if m not in METHODS:
            raise SystemExit(f"error: unknown method {m!r}; expected some of {METHODS}")
    layer_name = args.layer or meta["default_layer"]
    layer = model.get_submodule(layer_name)
    sigma_all = [float(s) for s in np.atleast_1d(meta["output_std"])]
    smocam_kwargs = {} if args.smocam_steps is None else {"n_steps": args.smocam_steps}
    method_kw = dict(layer=layer, output_std=sigma_all, smocam_kwargs=smocam_kwargs,
                     occlusion_window=args.occlusion_window, occlusion_stride=args.occlusion_stride,
                     smoothgrad_samples=args.smoothgrad_samples, ig_steps=args.ig_steps)
    out_dir = Path(args.out_dir)
    suffix = "_quick" if args.quick else ""
    csv_path = out_dir / f"compare_methods{suffix}.csv"
    rnd_path = out_dir / f"compare_randomization{suffix}.csv"
    indices = split_indices(meta, args.split, args.n_subjects)
    target_idx = [names.index(t) for t in args.targets]
    # One run per row of the tables: SMOCAM once per set of references, every other method once.
    variants = (smocam_variants(model, meta, args.smocam_references, k=args.reference_k, seed=args.reference_seed)
                if "smocam" in args.methods else [])
    runs = []  # (row name, method, the model it explains, where its references come from if not the checkpoint)
    for m in args.methods:
        runs += ([(v.name, "smocam", v.model, None if v.spec == "model" else v.references) for v in variants]
                 if m == "smocam" else [(m, m, model, None)])
    print(f"model {args.model}, layer {layer_name}, {len(indices)} {args.split} subjects {indices[0]}..{indices[-1]}, "
          f"targets {args.targets}, rows {[r[0] for r in runs]}; {machine_description()}", flush=True)
    for v in variants:
        print(f"{v.name}: references {v.references}", flush=True)
    for m in args.methods:
        settings = {k: v for k, v in method_settings(m, occlusion_window=args.occlusion_window,
                                                     occlusion_stride=args.occlusion_stride, ig_steps=args.ig_steps,
                                                     smoothgrad_samples=args.smoothgrad_samples).items()
                    if k != "sign"}
        if settings:
            print(f"{m}: {settings}", flush=True)

    if args.cost_only is not None:
        return cost_only(args, model, indices[0], meta, target_idx, method_kw)
    warm_up(model, load_subject(indices[0], meta)[0], target_idx[0], args.methods, **method_kw)
    rows, rnd_rows, figure_maps = [], [], None
    phase = {"maps": 0.0, "scores": 0.0, "randomisation": 0.0}
    for i_subj, index in enumerate(tqdm(indices, desc="subjects", unit="subj", file=sys.stdout, mininterval=5)):
        x, subject = load_subject(index, meta)
        spacing = voxel_spacing(subject)
        masks = {t: structure_mask(subject, t) for t in args.targets}
        contras = {t: (structure_mask(subject, contralateral(t)) if contralateral(t) else None) for t in args.targets}
        references = {}
        for row_name, method, run_model, note in runs:
            t0 = time.perf_counter()
            record = {}
            kw = dict(method_kw, layer=run_model.get_submodule(layer_name))  # a copy's own layer
            maps, sec, peak, per_call = compute_maps(method, run_model, x, target_idx, **kw, record=record)
            phase["maps"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            if i_subj == 0 and "right_lateral_ventricle" in args.targets:
                figure_maps = figure_maps or {}
                figure_maps[row_name] = maps[args.targets.index("right_lateral_ventricle")]
            used = ("" if method != "smocam" else describe_references(record.get("reference_source"), meta)
                    if note is None else f"{record.get('reference_source')} ({note})")
            for k, (tname, tidx) in enumerate(zip(args.targets, target_idx)):
                row = {"subject": index, "target": tname, "method": row_name,
                       "true_volume": float(subject.volumes[tname])}
                row.update(localisation_scores(maps[k], masks[tname], contras[tname], args.margin_mm, spacing,
                                               labels=subject.labels, label=structure_label(tname)))
                need_ref = tname not in references
                faith = faithfulness_scores(model, x, maps[k], tidx, sigma_all[tidx],
                                            random_orderings=args.random_orderings if need_ref else 0,
                                            seed=args.seed + index, fractions=args.fractions)
                if need_ref:
                    references[tname] = {k2: faith.pop(k2) for k2 in ("random_deletion_auc", "random_insertion_auc")
                                         if k2 in faith}
                row.update(faith)
                row.update(references[tname])
                row.update({"seconds_per_map": sec, "peak_rss_mb": peak, "maps_per_call": per_call,
                            "reference_source": used})
                rows.append(row)
            phase["scores"] += time.perf_counter() - t0
        write_csv(pd.DataFrame(rows), csv_path)

        t0 = time.perf_counter()
        if i_subj < args.randomization_subjects:
            for tname in args.randomization_targets:
                tidx = names.index(tname)
                head, features = "head", "features"
                for row_name, method, run_model, _ in runs:
                    constant = []  # whether each map (original, then one per step) is constant

                    def fn(m, inp, tgt, _method=method, _constant=constant):
                        lay = m.get_submodule(layer_name)
                        kw = dict(method_kw, layer=lay)
                        a = attribute_map(_method, m, inp, tgt, **kw)[0, 0]
                        _constant.append(bool(a.max() == a.min()))
                        return a

                    df = metrics.cascading_randomization(run_model, fn, x, tidx, layers=[head, features],
                                                         seed=args.seed)
                    for _, r in df.iterrows():
                        rnd_rows.append({"subject": index, "target": tname, "method": row_name,
                                         "step": int(r["step"]),
                                         "step_name": "top (head)" if r["layer"] == head else "all layers",
                                         "layer": r["layer"], "spearman": float(r["spearman"]),
                                         "map_constant": constant[int(r["step"])]})
            write_csv(pd.DataFrame(rnd_rows), rnd_path)
        phase["randomisation"] += time.perf_counter() - t0
        tqdm.write(f"subject {index}: cumulative seconds " + ", ".join(f"{k} {v:.0f}" for k, v in phase.items()),
                   file=sys.stdout)

    df = pd.DataFrame(rows)
    elapsed = time.perf_counter() - t_start
    header = (f"Command: `python benchmarks/compare_methods.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
              f"  \nWall time: {elapsed / 60:.1f} min with {torch.get_num_threads()} torch threads; "
              f"{len(indices)} {args.split} subjects; phases (s): "
              + ", ".join(f"{k} {v:.0f}" for k, v in phase.items())
              + f"; margin {args.margin_mm:g} mm; layer {layer_name}; "
              f"occlusion window {args.occlusion_window} stride {args.occlusion_stride} "
              f"({occlusion_evaluations(tuple(x.shape[2:]), args.occlusion_window, args.occlusion_stride)} "
              f"evaluations)")
    summary = write_summary(df, pd.DataFrame(rnd_rows) if rnd_rows else None, args, header, suffix)
    print(summary, flush=True)

    if args.figure and figure_maps:
        from captum_smocam.plotting import plot_comparison

        x0, subject0 = load_subject(indices[0], meta)
        fig = plot_comparison({method_label(m): v for m, v in figure_maps.items()}, x0[0, 0].numpy(),
                              outline=structure_mask(subject0, "right_lateral_ventricle"),
                              cut_coords=tuple(int(c) for c in np.round(np.argwhere(
                                  structure_mask(subject0, "right_lateral_ventricle")).mean(0))),
                              title=f"right lateral ventricle volume, {args.split} subject {indices[0]}")
        save_figure(fig, args.figure, dpi=110, bbox_inches="tight")
        print(f"figure: {args.figure}", flush=True)
    print(f"done in {elapsed / 60:.1f} min; results in {csv_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
