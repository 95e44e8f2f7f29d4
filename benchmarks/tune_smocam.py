"""Choose SMOCAM's settings across architectures, on VALIDATION subjects of left/right-independent models.

Issue 19: the defaults chosen on one model (the shipped VGG) must hold on the models users bring. Each
configuration (a set of :meth:`captum_smocam.SMOCAM.attribute` settings and a reference condition) runs on
the first ``--n-subjects`` validation subjects of every ``--models`` entry, the four poster targets of each
subject in one batch, and every map is scored where the truth is known (models trained with
``lr_correlation=0``):

* ``mass_dilated``: share of the map's mass within ``--margin-mm`` (6) of the structure;
* ``auroc``: the structure's voxels against the rest of the brain, ranked by the map;
* ``max_on_target``: 1 when the map's maximum lies within 6 mm of the structure;
* ``components``: connected pieces (26-neighbours) of the map above half its maximum;
* ``fidelity``: mean over the references of ``|y_M - y| / sigma`` for the returned mask
  (:attr:`captum_smocam.SMOCAM.fidelity`);
* ``seconds_per_map``.

Reference conditions: ``model`` (the checkpoint's ``reference_inputs``, its first training scans),
``none`` (the model's references removed: the fallback named by the configuration runs), ``scans``
(8 validation scans that are not scored, as a user's own references).

Selection rule (written before the run, in this docstring, and applied by
:func:`captum_smocam.benchmarking.sweep.rank_configs`-style ranking below):

1. a configuration is *eligible* when its time per map is at most ``--max-cost`` (1.5) times that of
   the current default (``current``) in the same run, and its mean ``fidelity`` is at most 0.1 on every
   model (when no configuration meets the fidelity bound, the bound is dropped and the table says so);
2. eligible configurations are ranked, on each model, by the mean over maps of ``mass_dilated``,
   ``auroc`` and ``max_on_target`` (higher is better) and of ``components`` (lower is better); the
   configuration with the smallest mean rank over models and these four scores wins; ties go to the
   lower time.

Round 2 (issue 19; written before its run, on validation subjects that round 1 did not score: the
``--first-subject 3 --n-subjects 10`` of each model, i.e. 10003-10012): round 1 showed that the fidelity
gate picks the configuration that localises worst (compact masks cannot keep a prediction drawn from
features spread over the brain), so ``--rule round2``:

1. *eligible*: time per map at most ``--max-cost`` (1.5) times ``current``'s, and a median of at most 3
   pieces above half the maximum on every model (issue 19's compactness criterion); fidelity is reported,
   not gated;
2. ranked as in round 1 (mean rank over models of ``mass_dilated``, ``auroc``, ``max_on_target``,
   ``components``); the smallest mean rank wins, ties to the lower time;
3. the winner becomes the default only if, paired with ``current`` on the same maps, neither its
   ``mass_dilated`` nor its ``auroc`` is worse on any model (the 95 % bootstrap interval of
   ``winner - current`` reaches 0 or lies above it); otherwise the defaults stay and the table says why.

Round 3 (issue 19; written after round 2's run and before round 3's, on validation subjects neither
earlier round scored: ``--first-subject 13 --n-subjects 10``, i.e. 10013-10022). Round 2's winner
(``smooth3``) failed its step 3 (mass within 6 mm fell on the VGG and MONAI), while other compact settings
held; so ``--rule round3`` moves step 3 into eligibility:

1. *eligible*: round 2's gates (cost <= 1.5 x ``current``, median pieces <= 3 on every model) AND
   ``mass_dilated`` and ``auroc`` held against ``current`` on every model (paired 95 % interval of
   ``config - current`` reaches 0 or lies above it);
2. ranked as before; the smallest mean rank wins, ties to the lower time, and becomes the default;
   when nothing is eligible the defaults stay.

``--context-methods smoothgrad`` scores other methods (:func:`captum_smocam.methods.attribute_map`) on
the same maps, for context only (``tune_<tag>_context.csv``); they take no part in the rule.

Usage::

    python benchmarks/tune_smocam.py --models vgg_independent benchmarks/runs/v3/alexnet3d_independent.pt \\
        --references model --configs current smooth1 smooth1_fid ...
    python benchmarks/tune_smocam.py --references none --configs shift minimum minimum+shift ...

Writes ``<out-dir>/tune_<tag>.csv`` (a row per configuration x model x map) and
``<out-dir>/tune_<tag>.md`` (means per configuration and model, ranks, the winner) after every model.
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from captum_smocam import SMOCAM, metrics
from captum_smocam.benchmarking import (POSTER_TARGETS, load_model, load_subject, split_indices, structure_mask,
                                        voxel_spacing, write_csv)
from captum_smocam.benchmarking.io import markdown_table, write_text
from captum_smocam.benchmarking.tuning import CONFIGS, paired_table, rank_table
from captum_smocam.methods import METHODS, attribute_map
from captum_smocam.models import get_reference_inputs, set_reference_inputs
from captum_smocam.spatial import upsample

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=None, help="shipped names or checkpoint paths")
    p.add_argument("--configs", nargs="+", default=None, help=f"names from {sorted(CONFIGS)}")
    p.add_argument("--summary", nargs="+", metavar="CSV", default=None,
                   help="compute nothing: rank the rows of these tune_*.csv files together (one table per "
                        "reference condition) into tune_<tag>.md")
    p.add_argument("--references", choices=("model", "none", "scans"), default="model")
    p.add_argument("--n-subjects", type=int, default=5, help="validation subjects scored per model")
    p.add_argument("--first-subject", type=int, default=0,
                   help="position in the validation split of the first scored subject (round 2: 3)")
    p.add_argument("--rule", choices=("round1", "round2", "round3"), default="round1",
                   help="round1: fidelity <= 0.1 sigma gates; round2: median pieces <= 3 gates; round3: also mass "
                        "and AUROC held against current (docstring)")
    p.add_argument("--context-methods", nargs="*", default=[],
                   help="other methods scored on the same maps, outside the rule (e.g. smoothgrad)")
    p.add_argument("--targets", nargs="+", default=list(POSTER_TARGETS))
    p.add_argument("--margin-mm", type=float, default=6.0)
    p.add_argument("--max-cost", type=float, default=1.5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results" / "tune"))
    p.add_argument("--tag", required=True)
    p.add_argument("--paired", action="store_true",
                   help="add each configuration's paired differences from the base (`current`) on the same maps")
    return p.parse_args(argv)


def score_map(mask_up: np.ndarray, struct: np.ndarray, brain: np.ndarray, margin_mm: float, spacing) -> dict:
    inside = brain | struct
    return {
        "mass_dilated": metrics.mass_inside_dilated(mask_up, struct, margin_mm, spacing),
        "auroc": metrics.auroc(mask_up[inside], struct[inside]),
        "max_on_target": float(metrics.pointing_game(mask_up, struct, margin_mm=margin_mm, spacing=spacing)),
        "components": float(metrics.n_components(mask_up)),
        "peak": float(mask_up.max()),
    }


def rule_kwargs(rule: str) -> dict:
    """``rank_table``'s gates for ``--rule`` (docstring)."""
    if rule == "round1":
        return {"fidelity_bound": 0.1}
    gates = {"fidelity_bound": None, "max_components": 3}
    return gates if rule == "round2" else {**gates, "must_hold": ("mass_dilated", "auroc")}


def main(argv=None):
    args = parse_args(argv)
    if args.summary:
        df = pd.concat([pd.read_csv(f) for f in args.summary], ignore_index=True)
        parts = [f"# SMOCAM tuning ({args.tag}): rows of {', '.join(Path(f).name for f in args.summary)}",
                 "", f"Command: `python benchmarks/tune_smocam.py --summary {' '.join(args.summary)} "
                 f"--tag {args.tag}" + (f" --rule {args.rule}" if args.rule != "round1" else "") + "`", ""]
        for refs, part in df.groupby("references", sort=False):
            base = "current" if "current" in set(part.config) else part.config.iloc[0]
            parts += [f"# References: {refs}", "", rank_table(part, base=base, max_cost=args.max_cost,
                                                              **rule_kwargs(args.rule)), ""]
        out = Path(args.out_dir) / f"tune_{args.tag}.md"
        write_text("\n".join(parts), out)
        print(f"wrote {out}")
        return
    if not args.models or not args.configs:
        raise SystemExit("--models and --configs are needed (or --summary)")
    torch.set_num_threads(args.threads)
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configs {unknown}; known: {sorted(CONFIGS)}")
    bad = [m for m in args.context_methods if m not in METHODS or m.startswith("smocam")]
    if bad:
        raise SystemExit(f"unknown context methods {bad}; known: {[m for m in METHODS if not m.startswith('smocam')]}")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, context = [], []
    t_start = time.time()
    for spec in args.models:
        model, meta = load_model(spec)
        name = Path(spec).stem if spec.endswith(".pt") else spec
        if float(meta.get("lr_correlation", 0.0)) != 0.0:
            print(f"note: {name} has lr_correlation {meta.get('lr_correlation')}: the truth is not clean there")
        layer = model.get_submodule(meta["default_layer"])
        std = torch.as_tensor(meta["output_std"], dtype=torch.float32)
        targets = [meta["output_names"].index(t) for t in args.targets]
        val = split_indices(meta, "val")
        subjects = val[args.first_subject: args.first_subject + args.n_subjects]
        if len(subjects) < args.n_subjects:
            raise SystemExit(f"{name}: only {len(subjects)} validation subjects from position {args.first_subject}")
        baselines = None
        own_refs = get_reference_inputs(model)
        if args.references == "none":
            set_reference_inputs(model, None)
        elif args.references == "scans":
            scans = val[-8:]  # never scored: the check below
            if set(scans) & set(subjects):
                raise SystemExit("not enough validation subjects for 8 reference scans apart from the scored ones")
            baselines = torch.cat([load_subject(i, meta)[0] for i in scans])
        loaded = [load_subject(i, meta) for i in subjects]
        for cname in args.configs:
            cfg = dict(CONFIGS[cname])
            smocam = SMOCAM(model, layer)
            # warm-up (tracing, kernel plans) outside the timing
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                smocam.attribute(loaded[0][0], target=targets[0], output_std=std, baselines=baselines, n_steps=2,
                                 **{k: v for k, v in cfg.items() if k != "n_steps"})
            for idx, (x, subject) in zip(subjects, loaded):
                xs = x.expand(len(targets), *x.shape[1:])
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    mask = smocam.attribute(xs, target=targets, output_std=std, baselines=baselines, **cfg)
                seconds = (time.perf_counter() - t0) / len(targets)
                up = upsample(mask, x.shape[2:], "linear").numpy()[:, 0]
                brain = np.asarray(subject.labels) > 0
                spacing = voxel_spacing(subject)
                for j, tname in enumerate(args.targets):
                    struct = structure_mask(subject, tname)
                    sc = score_map(up[j], struct, brain, args.margin_mm, spacing)
                    rows.append({"config": cname, "model": name, "references": args.references, "subject": idx,
                                 "target": tname, **sc, "fidelity": float(smocam.fidelity[j]),
                                 "seconds_per_map": seconds, "reference_source": smocam.reference_source})
            df = pd.DataFrame(rows)
            last = df[(df.config == cname) & (df.model == name)]
            print(f"[{time.time() - t_start:6.0f} s] {name:24s} {cname:18s} mass {last.mass_dilated.mean():.3f} "
                  f"auroc {last.auroc.mean():.3f} max_on {last.max_on_target.mean():.2f} "
                  f"comp {last.components.median():.0f} fid {last.fidelity.mean():.3f} "
                  f"s/map {last.seconds_per_map.mean():.2f}", flush=True)
        for method in args.context_methods:
            for idx, (x, subject) in zip(subjects, loaded):
                brain = np.asarray(subject.labels) > 0
                spacing = voxel_spacing(subject)
                for tname, t in zip(args.targets, targets):
                    t0 = time.perf_counter()
                    amap = attribute_map(method, model, x, t, layer=layer).detach().numpy()[0, 0]
                    seconds = time.perf_counter() - t0
                    sc = score_map(amap, structure_mask(subject, tname), brain, args.margin_mm, spacing)
                    context.append({"method": method, "model": name, "subject": idx, "target": tname, **sc,
                                    "seconds_per_map": seconds})
            last = pd.DataFrame(context)
            last = last[(last.method == method) & (last.model == name)]
            print(f"[{time.time() - t_start:6.0f} s] {name:24s} {method:18s} mass {last.mass_dilated.mean():.3f} "
                  f"auroc {last.auroc.mean():.3f} max_on {last.max_on_target.mean():.2f} "
                  f"comp {last.components.median():.0f} (context)", flush=True)
        if context:
            write_csv(pd.DataFrame(context), out_dir / f"tune_{args.tag}_context.csv")
        if own_refs is not None:
            set_reference_inputs(model, own_refs)
        df = pd.DataFrame(rows)
        write_csv(df, out_dir / f"tune_{args.tag}.csv")
        base = "current" if "current" in args.configs else args.configs[0]
        text = rank_table(df, base=base, max_cost=args.max_cost, **rule_kwargs(args.rule))
        if args.paired:
            held_on = None if args.rule == "round1" else ("mass_dilated", "auroc")
            text += "\n\n" + paired_table(df, base, held_on=held_on)
        if context:
            cdf = pd.DataFrame(context)
            means = cdf.groupby(["method", "model"], sort=False)[[s for s in cdf.columns if s not in
                                                                  ("method", "model", "subject", "target")]].mean()
            text += ("\n\n## Other methods on the same maps (context only, outside the rule)\n\n"
                     + markdown_table(means.reset_index()))
        cmd = "python benchmarks/tune_smocam.py " + " ".join(
            [f"--models {' '.join(args.models)}", f"--configs {' '.join(args.configs)}",
             f"--references {args.references}", f"--n-subjects {args.n_subjects}", f"--threads {args.threads}",
             f"--tag {args.tag}"] + (["--paired"] if args.paired else [])
            + ([f"--first-subject {args.first_subject}"] if args.first_subject else [])
            + ([f"--rule {args.rule}"] if args.rule != "round1" else [])
            + ([f"--context-methods {' '.join(args.context_methods)}"] if args.context_methods else []))
        write_text(f"# SMOCAM tuning ({args.tag})\n\nCommand: `{cmd}`\n\n" + text + "\n",
                   out_dir / f"tune_{args.tag}.md")
    print(f"done in {(time.time() - t_start) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
