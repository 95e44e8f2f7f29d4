"""Does a model trained on correlated left/right volumes underestimate large asymmetries?

A controlled reproduction of the hippocampal-asymmetry finding of the SMOCAM
poster (Konate et al.): the network predicted an asymmetry of 0.10 cm³ for a
patient whose true asymmetry was ~1.12 cm³, and the authors hypothesised
that it used one hippocampus for both predictions because left and right
volumes correlate in the training data. Here two VGG3D models that differ
only in their training cohort are compared:

* ``vgg`` — left/right log volume factors correlated at r = 0.95;
* ``vgg_independent`` — the same recipe on a cohort with r = 0.

Steps (all written to ``--out-dir``):

1. Reference: the training cohort's hippocampal asymmetry ``R - L`` (cm³)
   for each model (``reference.csv``), read from the training cache of
   ``benchmarks/train.py`` when it exists, otherwise computed for the first
   ``--n-reference`` training indices from the synthetic deformation alone
   (:func:`cohort_volumes`, checked against ``synth.generate_subject``).
2. Test subjects (test-split indices only): natural subjects of both cohorts
   and subjects whose hippocampus volume factors are overridden to
   ``left = 1 - a/2``, ``right = 1 + a/2`` for asymmetries ``a`` in
   ``--levels`` (percent). Each model predicts all of them
   (``predictions.csv``); the slope and correlation of predicted on true
   asymmetry are in ``fit.csv``.
3. For the tail cases (``--attr-levels``) and each method: maps for the left
   and right hippocampus outputs, their side specificity on the subject's
   label map (share of the positive mass on the two hippocampi that is on
   the explained side) and hemisphere share (``attention.csv``), and the top
   regions (``regions.csv``).
4. Figures ``asymmetry_distribution.png``, ``asymmetry_scatter.png`` and
   ``asymmetry_masks.png`` in ``--figures-dir``.

Usage::

    python benchmarks/asymmetry.py                 # full run (~20-30 min on 2 cores)
    python benchmarks/asymmetry.py --quick         # smoke test (< 2 min)

A ``--quick`` run writes ``_quick`` names, by default under
``benchmarks/runs/quick/asymmetry/`` (git-ignored, figures included), never
over the full run's tables and figures.

See ``docs/asymmetry.md`` for the results.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from captum_smocam import synth
from captum_smocam.benchmarking import (
    cohort_volumes,
    load_model,
    load_subject,
    markdown_table,
    read_training_volumes,
    same_synth,
    save_figure,
    structure_mask,
    synth_sha1,
    write_csv,
    write_text,
)
from captum_smocam.benchmarking.asymmetry import (
    LEFT,
    RIGHT,
    asymmetry,
    build_subject_specs,
    evaluate_criteria,
    fit_line,
)
from captum_smocam.methods import METHOD_LABELS
from captum_smocam.metrics import hemisphere_share, side_specificity, side_specificity_density
from captum_smocam.pipeline import explain, resolve_layer
from captum_smocam.regions import get_region_table
from captum_smocam.smocam import DEFAULT_OBJECTIVE, OBJECTIVES, SMOCAM, upsample_mask

REPO = Path(__file__).resolve().parents[1]
#: Where a quick run writes by default (git-ignored scratch).
QUICK = REPO / "benchmarks" / "runs" / "quick" / "asymmetry"
DEFAULT_MODELS = ("vgg", "vgg_independent")
DEFAULT_LEVELS = (-40, -30, -20, -10, 0, 10, 20, 30, 40)
DEFAULT_ATTR_LEVELS = (-40, -30, 0, 30, 40)
DEFAULT_OCCLUSION_LEVELS = (-40, 40)
#: The poster's patient: true asymmetry ~1.12 cm³ (the distribution figure shows the tail case closest to it).
POSTER_ASYMMETRY_CM3 = 1.12


# ----------------------------------------------------------------------------- helpers
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _full_volumes(index: int, r: float, seed: int) -> dict:
    return synth.generate_subject(index, lr_correlation=r, cohort_seed=seed).volumes


def reference_volumes(meta: dict, n: int, cache_dir: Path, checked: dict) -> tuple:
    """``(left, right, source)``: hippocampus volumes (cm³) of the model's training cohort.

    All training subjects from ``benchmarks/train.py``'s cache when it holds
    them, else the first ``n``, through :func:`cohort_volumes` once it has given
    ``generate_subject``'s volumes on the first of them (``checked`` remembers
    the verdict per cohort).
    """
    y = read_training_volumes(meta, cache_dir)
    start, stop = meta["splits"]["train"]
    names = list(synth.STRUCTURE_NAMES)
    if y is not None:
        return (y[:, names.index(LEFT)], y[:, names.index(RIGHT)],
                f"train cache (all {len(y)} training subjects [{start}, {stop}))")
    log(f"no usable training cache in {cache_dir} (a chunk is missing or made by another synth version)")
    r, seed = float(meta["lr_correlation"]), int(meta.get("cohort_seed", 0))
    indices = list(range(start, min(stop, start + n)))
    key = (r, seed, indices[0])
    if key not in checked:  # the shortcut must give generate_subject's volumes exactly
        full, fast = _full_volumes(indices[0], r, seed), cohort_volumes(indices[0], r, seed)
        err = max(abs(full[k] - fast[k]) for k in names)
        checked[key] = err <= 1e-6
        if not checked[key]:
            log(f"WARNING: cohort_volumes differs from generate_subject by {err:.3g} cm3 (synth changed); "
                "generating full subjects instead")
    volumes_of = cohort_volumes if checked[key] else _full_volumes
    from tqdm.auto import tqdm

    vols = [volumes_of(i, r, seed) for i in tqdm(indices, desc=f"reference r={r:g}", mininterval=10)]
    return (np.array([v[LEFT] for v in vols]), np.array([v[RIGHT] for v in vols]),
            f"generated volumes of training indices {indices[0]}-{indices[-1]} (n={len(indices)})")


# ----------------------------------------------------------------------------- parts
def predict(model, images: list, batch: int = 4) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.stack(images[i:i + batch]))[:, None]
            out.append(model(x).numpy())
    return np.concatenate(out)


def explain_case(method: str, model, meta: dict, x: torch.Tensor, targets: list, args) -> torch.Tensor:
    if method == "smocam":
        # SMOCAM directly (as pipeline.explain does: K targets as one batch) to keep its loss history.
        kwargs = {"objective": args.smocam_objective}
        if args.smocam_steps is not None:
            kwargs["n_steps"] = args.smocam_steps
        if args.smocam_smooth_weight is not None:
            kwargs["smooth_weight"] = args.smocam_smooth_weight
        _, layer = resolve_layer(model, meta)
        std = torch.tensor(meta["output_std"], dtype=torch.float32)
        sm = SMOCAM(model, layer)
        mask = sm.attribute(x.expand(len(targets), *x.shape[1:]), target=list(targets), output_std=std, **kwargs)
        h = sm.history
        explain_case.last_history = [dict(smocam_distance_step0=float(h["distance"][0, i]),
                                          smocam_distance_final=float(h["distance"][-1, i]),
                                          smocam_mask_cv=float(mask[i].std() / mask[i].mean()))
                                     for i in range(len(targets))]
        return upsample_mask(mask, x.shape[2:]).detach()
    explain_case.last_history = None
    if method == "occlusion":
        return explain(model, meta, x, targets, method="occlusion", occlusion_window=args.occlusion_window,
                       occlusion_stride=args.occlusion_stride, perturbations_per_eval=4)
    return explain(model, meta, x, targets, method=method)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                   help="shipped model names or checkpoint paths; the first is the correlated one")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 natural subject per cohort + the +40%% case, SMOCAM only, 10 steps, 4 reference subjects")
    p.add_argument("--n-reference", type=int, default=200,
                   help="training subjects for the reference distribution when no training cache exists")
    p.add_argument("--n-natural", type=int, default=10, help="natural test subjects per training cohort")
    p.add_argument("--levels", type=float, nargs="+", default=list(DEFAULT_LEVELS),
                   help="asymmetries (%% of mean hippocampus volume) of the override subjects")
    p.add_argument("--attr-levels", type=float, nargs="+", default=list(DEFAULT_ATTR_LEVELS),
                   help="override levels whose maps are computed (tail cases + 0 as control)")
    p.add_argument("--methods", nargs="+", default=["smocam", "gradcam", "occlusion"])
    p.add_argument("--occlusion-levels", type=float, nargs="+", default=list(DEFAULT_OCCLUSION_LEVELS),
                   help="attr levels on which Occlusion runs (it is the slow method)")
    p.add_argument("--occlusion-window", type=int, default=8)
    p.add_argument("--occlusion-stride", type=int, default=8)
    p.add_argument("--smocam-steps", type=int, default=None,
                   help="SMOCAM optimisation steps (default: the objective's, smocam.OBJECTIVE_DEFAULTS)")
    p.add_argument("--smocam-objective", default=DEFAULT_OBJECTIVE, choices=OBJECTIVES,
                   help=f"SMOCAM objective (default: {DEFAULT_OBJECTIVE})")
    p.add_argument("--smocam-smooth-weight", type=float, default=None,
                   help="SMOCAM's gamma (default: the objective's, smocam.OBJECTIVE_DEFAULTS)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out-dir", default=None,
                   help=f"tables (default: benchmarks/results/asymmetry; with --quick {QUICK.relative_to(REPO)})")
    p.add_argument("--figures-dir", default=None,
                   help=f"figures (default: docs/figures; with --quick {QUICK.relative_to(REPO)})")
    p.add_argument("--cache-dir", default=str(REPO / "benchmarks" / "runs"),
                   help="benchmarks/train.py's data cache (training volumes are read from it if present)")
    args = p.parse_args(argv)
    # A quick run never writes over the published results: its own names, in a scratch folder.
    args.out_dir = args.out_dir or str(QUICK if args.quick else REPO / "benchmarks" / "results" / "asymmetry")
    args.figures_dir = args.figures_dir or str(QUICK if args.quick else REPO / "docs" / "figures")
    if args.quick:
        args.n_reference, args.n_natural = 4, 1
        args.levels, args.attr_levels, args.occlusion_levels = [40.0], [40.0], []
        args.methods, args.smocam_steps = ["smocam"], 10
    for name in ("n_reference", "smocam_steps", "threads", "occlusion_window", "occlusion_stride"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.occlusion_stride > args.occlusion_window:
        p.error(f"--occlusion-stride {args.occlusion_stride} must not exceed --occlusion-window "
                f"{args.occlusion_window} (Captum's Occlusion would leave voxels unscored)")
    unknown = sorted(set(args.methods) - set(METHOD_LABELS))
    if unknown:
        p.error(f"unknown method(s) {unknown}; expected some of {sorted(METHOD_LABELS)}")
    missing = sorted(set(args.attr_levels) - set(args.levels))
    if missing:
        p.error(f"--attr-levels {missing} are not among --levels {args.levels}")
    return args


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    out_dir, fig_dir, cache_dir = Path(args.out_dir), Path(args.figures_dir), Path(args.cache_dir)
    suffix = "_quick" if args.quick else ""
    log("command: python benchmarks/asymmetry.py " + " ".join(sys.argv[1:] if argv is None else argv))
    log(f"torch {torch.__version__}, threads {args.threads}, python {platform.python_version()}")

    # Models.
    models, metas = {}, {}
    for spec in args.models:
        name = Path(spec).stem if os.path.isfile(spec) else spec
        models[name], metas[name] = load_model(spec)
        m = metas[name]
        log(f"model {name}: lr_correlation {m.get('lr_correlation')}, cohort_seed {m.get('cohort_seed')}, "
            f"splits {m.get('splits')}, test R2 L/R hippocampus "
            f"{m.get('test_metrics', {}).get(LEFT, {}).get('r2')}/{m.get('test_metrics', {}).get(RIGHT, {}).get('r2')}")
    current_sha = synth_sha1()
    for name, m in metas.items():
        if "synth_sha1" in m and not any(same_synth(current_sha, v) for v in str(m["synth_sha1"]).split(",")):
            log(f"WARNING: {name} was trained on synth version {m['synth_sha1']}, test subjects use {current_sha}")
    names = list(next(iter(metas.values()))["output_names"])
    il, ir = names.index(LEFT), names.index(RIGHT)

    # 1. Reference distributions.
    t0 = time.time()
    refs, ref_rows, checked = {}, [], {}
    for name, meta in metas.items():
        left, right, source = reference_volumes(meta, args.n_reference, cache_dir, checked)
        a = asymmetry(left, right)
        refs[name] = dict(asym=a, mean=float(a.mean()), sd=float(a.std(ddof=1)), source=source)
        log(f"reference {name}: {source}; asymmetry R-L mean {a.mean():+.4f} cm3, sd {a.std(ddof=1):.4f} cm3, "
            f"|asym| p99 {np.percentile(np.abs(a), 99):.3f} cm3, max |asym| {np.abs(a).max():.3f} cm3, "
            f"L/R corr {np.corrcoef(left, right)[0, 1]:.3f}")
        ref_rows += [dict(model=name, i=i, left_cm3=l_, right_cm3=r_, asym_cm3=d, z=(d - refs[name]["mean"]) / refs[name]["sd"])
                     for i, (l_, r_, d) in enumerate(zip(left, right, a))]
    write_csv(pd.DataFrame(ref_rows), out_dir / f"reference{suffix}.csv", float_format="%.5f")
    log(f"reference done in {time.time() - t0:.0f} s")

    # 2. Test subjects and predictions.
    t0 = time.time()
    specs = build_subject_specs(metas, args.n_natural, args.levels)
    subjects, images = {}, []
    from tqdm.auto import tqdm

    first_meta = next(iter(metas.values()))  # the test subjects are normalised as the first model expects
    for spec in tqdm(specs, desc="test subjects", mininterval=10):
        x, s = load_subject(spec["index"], first_meta, lr_correlation=spec["lr_correlation"],
                            cohort_seed=spec["cohort_seed"], overrides=spec["overrides"])
        images.append(x[0, 0].numpy())
        subjects[spec["subject"]] = s
    log(f"generated {len(specs)} test subjects in {time.time() - t0:.0f} s")
    rows = []
    for name, model in models.items():
        pred = predict(model, images)
        ref = refs[name]
        for spec, p in zip(specs, pred):
            s = subjects[spec["subject"]]
            tl, tr = s.volumes[LEFT], s.volumes[RIGHT]
            ta, pa = tr - tl, float(p[ir] - p[il])
            rows.append(dict(model=name, subject=spec["subject"], kind=spec["kind"], index=spec["index"],
                             cohort_r=spec["lr_correlation"], level_pct=spec["level_pct"],
                             true_left=tl, true_right=tr, pred_left=float(p[il]), pred_right=float(p[ir]),
                             true_asym=ta, pred_asym=pa, pred_over_true=pa / ta if abs(ta) > 0.05 else float("nan"),
                             true_z=(ta - ref["mean"]) / ref["sd"], pred_z=(pa - ref["mean"]) / ref["sd"],
                             true_pct_rank=100.0 * float(np.mean(ref["asym"] <= ta)),
                             pred_pct_rank=100.0 * float(np.mean(ref["asym"] <= pa))))
    preds = pd.DataFrame(rows)
    write_csv(preds, out_dir / f"predictions{suffix}.csv", float_format="%.4f")
    fits = []
    for name in models:
        d = preds[preds.model == name]
        for subset, sel in (("all", d), ("natural", d[d.kind == "natural"]), ("override", d[d.kind == "override"]),
                            *((f"natural_r{r:g}", d[(d.kind == "natural") & (d.cohort_r == r)])
                              for r in sorted(d.cohort_r.unique()))):
            if len(sel):
                f = fit_line(sel.true_asym, sel.pred_asym)
                fits.append(dict(model=name, subset=subset, **f,
                                 mae_left=float(np.mean(np.abs(sel.pred_left - sel.true_left))),
                                 mae_right=float(np.mean(np.abs(sel.pred_right - sel.true_right)))))
    fit_df = pd.DataFrame(fits)
    write_csv(fit_df, out_dir / f"fit{suffix}.csv", float_format="%.4f")
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        log("fit of predicted on true asymmetry (cm3):\n" + fit_df.to_string(index=False, float_format="%.3f"))
        cols = ["model", "subject", "true_left", "true_right", "pred_left", "pred_right", "true_asym", "pred_asym",
                "pred_over_true", "true_z", "pred_z"]
        log("override (tail) subjects:\n" + preds[preds.kind == "override"][cols].to_string(index=False, float_format="%.3f"))

    # 3. Maps of the tail cases.
    t0 = time.time()
    att_rows, reg_rows, masks_for_fig = [], [], {}
    tail_specs = [s for s in specs if s["kind"] == "override" and s["level_pct"] in set(args.attr_levels)]
    for spec in tail_specs:
        s = subjects[spec["subject"]]
        x = torch.from_numpy(images[specs.index(spec)])[None, None]
        masks = {"left": structure_mask(s, LEFT), "right": structure_mask(s, RIGHT)}
        for name, model in models.items():
            for method in args.methods:
                if method == "occlusion" and spec["level_pct"] not in set(args.occlusion_levels):
                    continue
                t1 = time.time()
                maps = explain_case(method, model, metas[name], x, [il, ir], args)
                seconds = time.time() - t1
                for k, side in enumerate(("left", "right")):
                    a = maps[k, 0].numpy().astype(np.float64)
                    other = "right" if side == "left" else "left"
                    table = get_region_table(a, s.labels, synth.LABELS)
                    shares = dict(zip(table.name, table.share))
                    att_rows.append(dict(
                        model=name, subject=spec["subject"], level_pct=spec["level_pct"], method=method,
                        target=f"{side}_hippocampus", seconds=seconds / 2,
                        side_specificity=side_specificity(a, masks[side], masks[other]),
                        side_specificity_density=side_specificity_density(a, masks[side], masks[other]),
                        hemisphere_share=hemisphere_share(a, s.affine, side),
                        share_target_hippocampus=shares.get(f"{side}_hippocampus", 0.0),
                        share_other_hippocampus=shares.get(f"{other}_hippocampus", 0.0),
                        **(explain_case.last_history[k] if method == "smocam" else {}),
                        top1=table.name.iloc[0], top2=table.name.iloc[1], top3=table.name.iloc[2],
                        **{f"top_mean{j + 1}": n_ for j, n_ in enumerate(
                            table.sort_values("attention_mean", ascending=False).name.iloc[:3])}))
                    for rank, row in table.iterrows():
                        reg_rows.append(dict(model=name, subject=spec["subject"], level_pct=spec["level_pct"],
                                             method=method, target=f"{side}_hippocampus", rank=rank + 1,
                                             region=row["name"], share=row["share"],
                                             attention_mean=row["attention_mean"]))
                    if method == "smocam":
                        masks_for_fig[(name, spec["subject"], side)] = a
                log(f"{name} {spec['subject']} {method}: {seconds:.1f} s; side specificity L/R "
                    f"{att_rows[-2]['side_specificity']:.3f}/{att_rows[-1]['side_specificity']:.3f}")
    att = pd.DataFrame(att_rows)
    write_csv(att, out_dir / f"attention{suffix}.csv", float_format="%.4f")
    write_csv(pd.DataFrame(reg_rows), out_dir / f"regions{suffix}.csv", float_format="%.4f")
    if len(att):
        summ = att.groupby(["model", "method"])[["side_specificity", "side_specificity_density", "hemisphere_share"]].agg(["mean", "min", "max"])
        with pd.option_context("display.width", 200):
            log("side specificity / hemisphere share over tail cases and both targets:\n"
                + summ.to_string(float_format="%.3f"))
    log(f"maps done in {time.time() - t0:.0f} s")

    # 4. Figures.
    make_figures(args, models, refs, preds, specs, subjects, masks_for_fig, fig_dir)
    write_summary(out_dir / f"summary{suffix}.md", argv, args, metas, refs,
                  preds, fit_df, att, time.time() - t_start)
    log(f"total {time.time() - t_start:.0f} s")
    return 0


def write_summary(path: Path, argv, args, metas, refs, preds, fit_df, att, seconds) -> None:
    cmd = "python benchmarks/asymmetry.py " + " ".join(sys.argv[1:] if argv is None else argv)
    names = list(metas)
    corr = names[0]
    ind = names[1] if len(names) > 1 else None
    out = ["# Asymmetry benchmark summary (written by benchmarks/asymmetry.py)", "",
           f"Command: `{cmd}` — {time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, "
           f"{args.threads} threads, wall {seconds:.0f} s.", "", "## Models", ""]
    rows = []
    for n, m in metas.items():
        tm = m.get("test_metrics", {})
        rows.append(dict(model=n, lr_correlation=m.get("lr_correlation"), epochs=m.get("epochs"),
                         test_r2_left_hipp=tm.get(LEFT, {}).get("r2", float("nan")),
                         test_r2_right_hipp=tm.get(RIGHT, {}).get("r2", float("nan")),
                         synth_sha1=m.get("synth_sha1", "?")))
    out += [markdown_table(pd.DataFrame(rows)), "", "## Reference (training-cohort) asymmetry R − L", ""]
    out += [markdown_table(pd.DataFrame([dict(model=n, source=r["source"], mean_cm3=r["mean"], sd_cm3=r["sd"],
                                         p99_abs_cm3=float(np.percentile(np.abs(r["asym"]), 99)))
                                    for n, r in refs.items()])), ""]
    out += ["## Predicted on true asymmetry (least squares, cm³)", "", markdown_table(fit_df), ""]
    cols = ["model", "subject", "true_left", "true_right", "pred_left", "pred_right", "true_asym", "pred_asym",
            "pred_over_true", "true_z", "pred_z"]
    out += ["## Override (tail) subjects", "", markdown_table(preds[preds.kind == "override"][cols]), ""]
    if att is not None and len(att):
        cols = ["model", "subject", "method", "target", "side_specificity", "side_specificity_density",
                "hemisphere_share", "share_target_hippocampus", "share_other_hippocampus", "top_mean1", "top_mean2"]
        out += ["## Maps of the tail cases and the 0 % control", "", markdown_table(att[cols]), ""]
    out += ["## Pre-registered criteria", "", markdown_table(pd.DataFrame(evaluate_criteria(fit_df, att, corr, ind),
                                                                    columns=["criterion", "value", "met"])), ""]
    write_text("\n".join(out) + "\n", path)
    log(f"wrote {path}")


def _poster_case(preds: pd.DataFrame, levels) -> str:
    """The override subject (among ``levels`` if any) whose true |asymmetry| is closest to the poster's 1.12 cm³."""
    d = preds[preds.kind == "override"].drop_duplicates("subject")
    if d.level_pct.isin(list(levels)).any():
        d = d[d.level_pct.isin(list(levels))]
    return d.iloc[int(np.argmin(np.abs(np.abs(d.true_asym.to_numpy()) - POSTER_ASYMMETRY_CM3)))]["subject"]


def make_figures(args, models, refs, preds, specs, subjects, masks_for_fig, fig_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from captum_smocam.plotting import plot_asymmetry, plot_attribution

    suffix = "_quick" if args.quick else ""
    case = _poster_case(preds, args.attr_levels)
    n = len(models)
    fig, axes = plt.subplots(1, n, figsize=(6.0 * n, 3.8), layout="constrained", squeeze=False)
    for ax, name in zip(axes[0], models):
        row = preds[(preds.model == name) & (preds.subject == case)].iloc[0]
        plot_asymmetry((refs[name]["asym"] - refs[name]["mean"]) / refs[name]["sd"],
                       row.true_z, row.pred_z, ax=ax, xlabel="normalised asymmetry z (R − L vs training cohort)",
                       title=f"{name}: true {row.true_asym:+.2f} cm³, predicted {row.pred_asym:+.2f} cm³")
    fig.suptitle(f"{case}: hippocampal asymmetry R − L against each model's training cohort", fontsize=10)
    save_figure(fig, fig_dir / f"asymmetry_distribution{suffix}.png", dpi=100)

    fig, ax = plt.subplots(figsize=(5.2, 4.6), layout="constrained")
    colors = ["tab:red", "tab:blue", "tab:green", "tab:purple"]
    lim = float(np.abs(preds[["true_asym", "pred_asym"]].to_numpy()).max()) * 1.1
    ax.plot([-lim, lim], [-lim, lim], color="gray", lw=1, ls=":", label="identity")
    for c, name in zip(colors, models):
        d = preds[preds.model == name]
        for kind, marker in (("natural", "o"), ("override", "s")):
            e = d[d.kind == kind]
            ax.scatter(e.true_asym, e.pred_asym, color=c, marker=marker, s=22, alpha=0.8,
                       label=f"{name} ({kind})")
        f = fit_line(d.true_asym, d.pred_asym)
        if np.isfinite(f["slope"]):
            ax.plot([-lim, lim], [f["intercept"] - f["slope"] * lim, f["intercept"] + f["slope"] * lim],
                    color=c, lw=1.2, label=f"{name} fit: slope {f['slope']:.2f}")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xlabel("true hippocampal asymmetry R − L (cm³)")
    ax.set_ylabel("predicted asymmetry R − L (cm³)")
    ax.legend(fontsize=7)
    save_figure(fig, fig_dir / f"asymmetry_scatter{suffix}.png", dpi=100)

    if not masks_for_fig:
        return
    case_masks = case if any(k[1] == case for k in masks_for_fig) else next(iter(masks_for_fig))[1]
    s = subjects[case_masks]
    hipp = structure_mask(s, LEFT) | structure_mask(s, RIGHT)
    cut = tuple(int(round(c)) for c in np.argwhere(hipp).mean(0))
    names_m = [m for m in models if (m, case_masks, "left") in masks_for_fig]
    fig = plt.figure(figsize=(11.0, 2.9 * len(names_m) + 0.4), layout="constrained")
    sub = fig.subfigures(len(names_m), 2, squeeze=False)
    for r, name in enumerate(names_m):
        vmax = max(float(masks_for_fig[(name, case_masks, sd)].max()) for sd in ("left", "right"))
        for c, side in enumerate(("left", "right")):
            a = masks_for_fig[(name, case_masks, side)]
            row = preds[(preds.model == name) & (preds.subject == case_masks)].iloc[0]
            axs = sub[r, c].subplots(1, 2)
            plot_attribution(a, s.image, display_mode="yz", cut_coords=cut, outline=hipp, axes=list(axs),
                             colorbar=c == 1, vmin=0.0, vmax=vmax or None)
            sub[r, c].suptitle(f"{name}: SMOCAM mask, {side} hippocampus (pred {getattr(row, 'pred_' + side):.2f}, "
                               f"true {getattr(row, 'true_' + side):.2f} cm³)", fontsize=9)
    fig.suptitle(f"{case_masks}: SMOCAM masks for the left and right hippocampus volume\n"
                 "(outline: both hippocampi; image left = subject left; one colour scale per model)", fontsize=10)
    save_figure(fig, fig_dir / f"asymmetry_masks{suffix}.png", dpi=100)


if __name__ == "__main__":
    sys.exit(main())
