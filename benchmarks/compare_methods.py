"""Benchmark SMOCAM against Grad-CAM, Occlusion, Saliency and DeepLIFT where the truth is known.

The shipped VGG3D regressor (``captum_smocam.models.load_default_model("vgg")``)
predicts the volume of every structure of the synthetic cohort
(:mod:`captum_smocam.synth`), so for each explained output we know which voxels
*should* matter: the structure itself (and, for a paired structure, not its
contralateral twin). On TEST-split subjects, for each target and method, the
map comes from :func:`captum_smocam.methods.attribute_map` (the one place the
methods are configured) and is scored with :mod:`captum_smocam.metrics`:

* localisation: mass inside the structure, inside the structure dilated by
  ``--margin-mm``, AUROC, pointing game (strict and within the margin);
* side specificity against the contralateral structure;
* faithfulness: deletion/insertion AUC (baseline = background value) with a
  random-ordering reference computed once per subject and target;
* cost: wall time per map and peak resident-memory increase during the call;
* sanity (on ``--randomization-subjects`` subjects): Adebayo et al.'s cascading
  randomisation, Spearman correlation to the original map after randomising the
  head (top) and then every layer (all).

Usage (the default run, ~20 test subjects x 4 targets x 5 methods)::

    python benchmarks/compare_methods.py
    python benchmarks/compare_methods.py --quick      # 1 subject, 1 target, < 2 min

Results: ``<out-dir>/compare_methods.csv`` (one row per subject x target x
method), ``<out-dir>/compare_randomization.csv``, ``<out-dir>/compare_summary.md``
(mean ± sd over subjects) and the comparison figure. CSVs are written atomically
after every subject, so an interrupted run keeps what it finished. A ``--quick``
run writes ``_quick`` names under ``benchmarks/runs/quick/`` (git-ignored) by
default, never over the published results and figure.
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
    best_or_tied_table,
    load_subject,
    localisation_scores,
    machine_description,
    randomization_table,
    save_figure,
    split_indices,
    structure_mask,
    summary_table,
    voxel_spacing,
    warm_up,
    write_csv,
    write_text,
)
from captum_smocam.methods import (
    DEFAULT_OCCLUSION_STRIDE,
    DEFAULT_OCCLUSION_WINDOW,
    METHOD_LABELS,
    METHODS,
    attribute_map,
    occlusion_evaluations,
)

REPO = Path(__file__).resolve().parents[1]
#: Where the full run's results go (committed), and a quick run's (git-ignored scratch).
RESULTS, QUICK = REPO / "benchmarks" / "results", REPO / "benchmarks" / "runs" / "quick"
FIGURE = "comparison_right_lateral_ventricle.png"

#: The targets of the default run (the poster's structures).
DEFAULT_TARGETS = POSTER_TARGETS
#: The methods of the default run (Integrated Gradients with ``--methods ... integrated_gradients``).
DEFAULT_METHODS = ("smocam", "smocam_poster", "gradcam", "occlusion", "saliency", "deeplift")
#: The five methods issue 12 ranks SMOCAM among (the poster's SMOCAM is shown for reference).
RANKED_METHODS = ("smocam", "gradcam", "occlusion", "saliency", "deeplift")
#: Fractions of the deletion/insertion curves (those of docs/metrics.md).
FRACTIONS = metrics.DEFAULT_FRACTIONS


# --------------------------------------------------------------------------- maps
def compute_maps(method: str, model, x, targets: Sequence[int], *, layer, output_std,
                 smocam_kwargs=None, occlusion_window=DEFAULT_OCCLUSION_WINDOW,
                 occlusion_stride=DEFAULT_OCCLUSION_STRIDE):
    """Maps of one scan for several targets, with the wall time and peak memory of producing them.

    SMOCAM explains the K targets in one batch (the scan repeated K times, the
    prefix computed once: how :mod:`captum_smocam.pipeline` uses it); the other
    methods run once per target. Returns ``(maps K x X x Y x Z numpy,
    seconds per map, peak MiB of one call, maps per call)``.
    """
    kw = dict(layer=layer, output_std=output_std, smocam_kwargs=smocam_kwargs,
              occlusion_window=occlusion_window, occlusion_stride=occlusion_stride)
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
    p.add_argument("--n-subjects", type=int, default=20, help="test subjects (from the start of the split)")
    p.add_argument("--targets", nargs="+", default=list(DEFAULT_TARGETS))
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    p.add_argument("--layer", default=None, help="layer for SMOCAM and Grad-CAM (default: the checkpoint's)")
    p.add_argument("--margin-mm", type=float, default=6.0, help="dilation of the structure for mass_dilated")
    p.add_argument("--random-orderings", type=int, default=2, help="random deletion orders per subject x target")
    p.add_argument("--randomization-subjects", type=int, default=2,
                   help="subjects for the cascading randomisation check (0: skip)")
    p.add_argument("--randomization-targets", nargs="+", default=["right_lateral_ventricle", "right_hippocampus"])
    p.add_argument("--occlusion-window", type=int, default=DEFAULT_OCCLUSION_WINDOW)
    p.add_argument("--occlusion-stride", type=int, default=DEFAULT_OCCLUSION_STRIDE)
    p.add_argument("--smocam-steps", type=int, default=None, help="override SMOCAM's n_steps (default: library default)")
    p.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS),
                   help="deletion/insertion fractions (default: those of docs/metrics.md)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=None,
                   help=f"results folder (default: {RESULTS.relative_to(REPO)}; with --quick {QUICK.relative_to(REPO)})")
    p.add_argument("--figure", default=None,
                   help=f"comparison figure (first subject, right lateral ventricle); '' to skip (default: "
                        f"docs/figures/{FIGURE}; with --quick <out-dir>/{FIGURE.replace('.png', '_quick.png')})")
    p.add_argument("--cost-only", nargs="*", metavar="WINDOW:STRIDE", default=None,
                   help="only time every method on the first subject (all targets), plus Occlusion at each "
                        "WINDOW:STRIDE given; writes <out-dir>/method_cost.csv")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 subject, right lateral ventricle, cheap settings (< 2 min)")
    args = p.parse_args(argv)
    if args.quick:
        args.n_subjects = 1
        args.targets = ["right_lateral_ventricle"]
        args.random_orderings = 1
        args.fractions = [0.0, 0.1, 0.5, 1.0]
        args.randomization_subjects = 1
        args.randomization_targets = ["right_lateral_ventricle"]
        args.smocam_steps = args.smocam_steps or 10
        args.occlusion_window, args.occlusion_stride = 24, 24
    # A quick run never writes over the published results.
    args.out_dir = args.out_dir or str(QUICK if args.quick else RESULTS)
    if args.figure is None:
        args.figure = str(Path(args.out_dir) / FIGURE.replace(".png", "_quick.png") if args.quick
                          else REPO / "docs" / "figures" / FIGURE)
    return args


def main(argv=None) -> int:
    import pandas as pd

    args = parse_args(argv)
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
                     occlusion_window=args.occlusion_window, occlusion_stride=args.occlusion_stride)
    out_dir = Path(args.out_dir)
    suffix = "_quick" if args.quick else ""
    csv_path = out_dir / f"compare_methods{suffix}.csv"
    rnd_path = out_dir / f"compare_randomization{suffix}.csv"
    indices = split_indices(meta, "test", args.n_subjects)
    target_idx = [names.index(t) for t in args.targets]
    print(f"model {args.model}, layer {layer_name}, {len(indices)} test subjects {indices[0]}..{indices[-1]}, "
          f"targets {args.targets}, methods {args.methods}; {machine_description()}", flush=True)
    if "occlusion" in args.methods:
        print(f"occlusion: window {args.occlusion_window}, stride {args.occlusion_stride}", flush=True)

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
        for method in args.methods:
            t0 = time.perf_counter()
            maps, sec, peak, per_call = compute_maps(method, model, x, target_idx, **method_kw)
            phase["maps"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            if i_subj == 0 and "right_lateral_ventricle" in args.targets:
                figure_maps = figure_maps or {}
                figure_maps[method] = maps[args.targets.index("right_lateral_ventricle")]
            for k, (tname, tidx) in enumerate(zip(args.targets, target_idx)):
                row = {"subject": index, "target": tname, "method": method,
                       "true_volume": float(subject.volumes[tname])}
                row.update(localisation_scores(maps[k], masks[tname], contras[tname], args.margin_mm, spacing))
                need_ref = tname not in references
                faith = faithfulness_scores(model, x, maps[k], tidx, sigma_all[tidx],
                                            random_orderings=args.random_orderings if need_ref else 0,
                                            seed=args.seed + index, fractions=args.fractions)
                if need_ref:
                    references[tname] = {k2: faith.pop(k2) for k2 in ("random_deletion_auc", "random_insertion_auc")
                                         if k2 in faith}
                row.update(faith)
                row.update(references[tname])
                row.update({"seconds_per_map": sec, "peak_rss_mb": peak, "maps_per_call": per_call})
                rows.append(row)
            phase["scores"] += time.perf_counter() - t0
        write_csv(pd.DataFrame(rows), csv_path)

        t0 = time.perf_counter()
        if i_subj < args.randomization_subjects:
            for tname in args.randomization_targets:
                tidx = names.index(tname)
                head, features = "head", "features"
                for method in args.methods:
                    constant = []  # whether each map (original, then one per step) is constant

                    def fn(m, inp, tgt, _method=method, _constant=constant):
                        lay = m.get_submodule(layer_name)
                        kw = dict(method_kw, layer=lay)
                        a = attribute_map(_method, m, inp, tgt, **kw)[0, 0]
                        _constant.append(bool(a.max() == a.min()))
                        return a

                    df = metrics.cascading_randomization(model, fn, x, tidx, layers=[head, features],
                                                         seed=args.seed)
                    for _, r in df.iterrows():
                        rnd_rows.append({"subject": index, "target": tname, "method": method,
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
    cols = ["mass_inside", "mass_dilated", "auroc", "pointing_dilated", "side_specificity",
            "deletion_auc", "insertion_auc", "seconds_per_map", "peak_rss_mb"]
    summary = (f"Command: `python benchmarks/compare_methods.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
               f"  \nWall time: {elapsed / 60:.1f} min with {torch.get_num_threads()} torch threads; "
               f"{len(indices)} test subjects; phases (s): " + ", ".join(f"{k} {v:.0f}" for k, v in phase.items()) +
               f"; margin {args.margin_mm:g} mm; layer {layer_name}; "
               f"occlusion window {args.occlusion_window} stride {args.occlusion_stride} "
               f"({occlusion_evaluations(tuple(x.shape[2:]), args.occlusion_window, args.occlusion_stride)} "
               f"evaluations)\n\n" + summary_table(df, args.methods, args.targets, cols))
    ref = df.groupby("target")[["random_deletion_auc", "random_insertion_auc"]].mean() \
        if "random_deletion_auc" in df else None
    if ref is not None:
        summary += "\nRandom-order reference (mean over subjects):\n\n| target | deletion AUC | insertion AUC |\n|---|---|---|\n"
        summary += "".join(f"| {t} | {r.random_deletion_auc:.3g} | {r.random_insertion_auc:.3g} |\n"
                           for t, r in ref.iterrows())
    if rnd_rows:
        summary += "\nCascading randomisation (Spearman of |map| to the original):\n\n"
        summary += randomization_table(pd.DataFrame(rnd_rows))
    ranked = [m for m in RANKED_METHODS if m in args.methods]
    if "smocam" in ranked and len(ranked) > 1 and len(indices) > 1:
        verdicts = best_or_tied_table(df, "smocam", ranked, args.targets,
                                      ["mass_dilated", "auroc", "deletion_auc"], seed=args.seed)
        write_csv(verdicts, out_dir / f"compare_verdicts{suffix}.csv")
        summary += (f"\nSMOCAM (default) against the best of {', '.join(METHOD_LABELS[m] for m in ranked)} "
                    "(paired 95 % bootstrap interval of the mean difference over subjects; tied if it holds 0):\n\n"
                    "| target | score | best | SMOCAM | best's | difference [95 % CI] | verdict |\n"
                    "|---|---|---|---|---|---|---|\n")
        for r in verdicts.itertuples():
            ci = "—" if r.verdict == "best" else f"{r.difference:+.3g} [{r.lower:+.3g}, {r.upper:+.3g}]"
            summary += (f"| {r.target} | {r.score} | {METHOD_LABELS[r.best]} | {r.value:.3g} | {r.best_value:.3g} | "
                        f"{ci} | {r.verdict} |\n")
    write_text(summary, out_dir / f"compare_summary{suffix}.md")
    print(summary, flush=True)

    if args.figure and figure_maps:
        from captum_smocam.plotting import plot_comparison

        x0, subject0 = load_subject(indices[0], meta)
        fig = plot_comparison({METHOD_LABELS[m]: v for m, v in figure_maps.items()}, x0[0, 0].numpy(),
                              outline=structure_mask(subject0, "right_lateral_ventricle"),
                              cut_coords=tuple(int(c) for c in np.round(np.argwhere(
                                  structure_mask(subject0, "right_lateral_ventricle")).mean(0))),
                              title=f"right lateral ventricle volume, test subject {indices[0]}")
        save_figure(fig, args.figure, dpi=110, bbox_inches="tight")
        print(f"figure: {args.figure}", flush=True)
    print(f"done in {elapsed / 60:.1f} min; results in {csv_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
