"""``smocam compare`` and ``smocam demo``: every method side by side for one scan and one output.

``demo`` is ``compare`` on a built-in synthetic subject, explained with the
shipped model (or ``--model``) for :data:`DEMO_TARGET`, the poster's figure.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pandas as pd
import torch

from .._io import child_path, safe_name, write_csv
from .flags import (
    add_model_args, add_run_args, add_scan_command_args, add_smocam_args, add_target_arg, smocam_kwargs,
)
from .outputs import output_set, run_settings, staged_output
from .scan import Inputs, label_names, load_inputs, predictions_table, top_regions, used_settings

__all__ = ["COMPARE_METHODS", "DEMO_TARGET", "CompareSettings", "add_compare", "run_compare", "add_demo",
           "run_demo"]

#: Methods run by ``smocam compare`` and ``smocam demo`` by default (the poster's five, SmoothGrad and IG).
COMPARE_METHODS = ("smocam", "gradcam", "occlusion", "saliency", "smoothgrad", "deeplift", "integrated_gradients")
#: The structure the demo explains (the poster's figure).
DEMO_TARGET = "right_lateral_ventricle"


@dataclass(frozen=True)
class CompareSettings:
    """How one comparison runs the methods: SMOCAM's given settings, Occlusion's window, progress bars, and the
    outline of the explained structure (``H x W x D`` bool on the model grid; the figure cuts through it)."""

    smocam_kwargs: Optional[Dict] = None
    occlusion_kwargs: Optional[Dict] = None
    show_progress: bool = True
    outline: Optional[torch.Tensor] = None


def add_compare(sub) -> None:
    """Declare ``smocam compare`` and its flags."""
    p = sub.add_parser("compare", help="all methods side by side for one scan and one output")
    p.add_argument("--image", required=True, help="T1 scan (NIfTI), registered to the model's space")
    add_target_arg(p, "output name or index")
    p.add_argument("--methods", default=",".join(COMPARE_METHODS), help="comma-separated methods")
    add_scan_command_args(p, "compare")
    p.set_defaults(func=run_compare)


def _parse_methods(spec: str) -> List[str]:
    from ..methods import METHODS

    methods = [m.strip() for m in spec.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"unknown method(s) {bad or spec!r}; expected some of {', '.join(METHODS)}")
    return methods


def _compare(inp: Inputs, target: int, methods: Sequence[str], stage: Path, settings: CompareSettings,
             used: Optional[Dict] = None) -> pd.DataFrame:
    """Run every method, write maps, figures and tables into ``stage``; return the summary table.

    ``used`` (a dict) is filled with what each method ran with and SMOCAM's references (:func:`used_settings`).
    """
    from ..methods import METHOD_LABELS, attribute_map
    from ..nifti import save_map
    from ..plotting import plot_comparison, plot_convergence, plot_region_attention
    from ..regions import get_region_table

    meta = inp.meta
    name = meta["output_names"][target]
    fname = safe_name(name)  # in file names; titles keep the name as the checkpoint spells it
    std = (torch.tensor(meta["output_std"], dtype=torch.float32)  # as explain: None lets SMOCAM take the model's
           if meta.get("output_std") is not None else None)
    maps, rows, tables = {}, [], []
    for method in methods:
        history: Dict = {}
        record: Dict = {}
        t0 = time.perf_counter()
        m = attribute_map(method, inp.model, inp.x, target, layer=inp.layer, output_std=std,
                          smocam_kwargs=settings.smocam_kwargs, show_progress=settings.show_progress,
                          history=history, record=record,
                          **((settings.occlusion_kwargs or {}) if method == "occlusion" else {}))
        seconds = time.perf_counter() - t0
        maps[METHOD_LABELS[method]] = m[0, 0]
        save_map(m[0], inp.info, child_path(stage, f"{method}_{fname}.nii.gz"))
        row = {"method": method, "seconds": round(seconds, 2)}  # top_regions: densest, see top_regions
        this = used_settings(record, meta)
        if "references" in this:
            row["references"] = this["references"]
        if used is not None:
            used.setdefault("methods", {}).update(this["methods"])
            if "references" in this:
                used["references"] = this["references"]
        if inp.labels is not None:
            table = get_region_table(m[0], inp.labels[0], inp.names, info=inp.info, labels_affine=inp.labels[1])
            table.insert(0, "method", method)
            tables.append(table)
            row["top_regions"] = top_regions(table)
            if method == "smocam":
                plot_region_attention(table, title=f"SMOCAM attention: {name}",
                                      output_file=child_path(stage, f"smocam_{fname}_regions.png"))
        if method == "smocam" and history:
            plot_convergence(history, title=f"SMOCAM objective: {name}",
                             output_file=child_path(stage, f"smocam_{fname}_convergence.png"))
        rows.append(row)
    # Cut through the structure when it is known, else through the first map's maximum.
    outline, cuts = settings.outline, None
    if outline is not None and bool(outline.any()):
        cuts = tuple(int(round(float(c))) for c in torch.nonzero(outline).float().mean(dim=0))
    plot_comparison(maps, inp.x[0, 0], outline=outline, cut_coords=cuts, title=f"{name}: where each method looks",
                    output_file=child_path(stage, f"comparison_{fname}.png"))
    if tables:
        write_csv(pd.concat(tables, ignore_index=True), child_path(stage, f"regions_{fname}.csv"))
    summary = pd.DataFrame(rows)
    write_csv(summary, child_path(stage, f"methods_{fname}.csv"))
    return summary


def run_compare(args) -> int:
    """Run ``smocam compare``: every method's map, the side-by-side figure and the tables, as one output set."""
    methods = _parse_methods(args.methods)
    kwargs = smocam_kwargs(args)
    inp = load_inputs(args, args.image)
    if len(inp.targets) != 1:
        raise ValueError(f"compare explains one output; got {len(inp.targets)} targets from {args.target!r}")
    preds = predictions_table(inp.model, inp.meta, inp.x)  # refuses NaN/Inf predictions before the slow part
    source = os.path.abspath(args.image)
    oset = output_set(args.out, "compare_outputs.json", source, args.force)
    used: Dict = {}
    with staged_output(oset, source, args.force, command="compare", model=str(args.model),
                       settings=run_settings(args, inp.model, inp.layer_name, methods), used=used) as stage:
        write_csv(preds, stage / "predictions.csv")
        summary = _compare(inp, inp.targets[0], methods, stage,
                           CompareSettings(smocam_kwargs=kwargs, show_progress=not args.no_progress), used)
    print(summary.to_string(index=False))
    return 0


def add_demo(sub) -> None:
    """Declare ``smocam demo`` and its flags."""
    p = sub.add_parser("demo", help="the main job on the shipped model and a built-in subject")
    add_model_args(p)
    p.add_argument("--quick", action="store_true",
                   help="fewer SMOCAM steps (20, unless --n-steps) and a coarser occlusion, for a smoke test")
    add_smocam_args(p)
    add_run_args(p, "demo", "replace files in --out that no smocam demo wrote", old_progress="--quiet")
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    """Run ``smocam demo``: a built-in subject written into ``--out`` and compared across every method."""
    from ..nifti import load_label_map, load_scan
    from ..pipeline import load_model, resolve_device, resolve_layer, resolve_targets
    from ..synth import generate_subject, structure_mask, write_lut, write_subject

    if args.quick and args.n_steps is None:
        args.n_steps = 20
    kwargs = smocam_kwargs(args)
    device = resolve_device(args.device)
    model, meta = load_model(args.model, trust_checkpoint=getattr(args, "trust_checkpoint", False))
    model = model.to(device)
    layer_name, layer = resolve_layer(model, meta, args.layer)
    (target,) = resolve_targets(meta, DEMO_TARGET)
    index = int(meta.get("splits", {}).get("test", [20000])[0])
    subject = generate_subject(index, lr_correlation=float(meta.get("lr_correlation", 0.95)))
    occlusion = {"occlusion_window": 12, "occlusion_stride": 12} if args.quick else {}
    oset = output_set(args.out, "demo_outputs.json", "smocam demo", args.force)
    used: Dict = {}
    with staged_output(oset, "smocam demo", args.force, command="demo", model=str(args.model),
                       subject=index, settings=run_settings(args, model, layer_name, COMPARE_METHODS), used=used) as stage:
        t1_path, lab_path = write_subject(subject, stage)
        write_lut(stage / "labels.txt")
        x, info = load_scan(t1_path, meta)
        x = x.to(device)
        inp = Inputs(model, meta, layer_name, layer, [target], x, info, load_label_map(lab_path, info),
                     label_names(None, lab_path))
        outline = torch.from_numpy(structure_mask(subject, DEMO_TARGET))
        preds = predictions_table(model, meta, x, truth=subject.volumes)
        write_csv(preds, stage / "predictions.csv")
        summary = _compare(inp, target, COMPARE_METHODS, stage,
                           CompareSettings(smocam_kwargs=kwargs, occlusion_kwargs=occlusion,
                                           show_progress=not args.no_progress, outline=outline), used)
    with pd.option_context("display.width", 160, "display.max_colwidth", 80):
        print(f"Built-in subject {Path(t1_path).name.split('_')[0]} (synthetic, seed {index}); "
              f"model {meta['arch']} explained at {layer_name}.\n")
        print(preds.round(2).to_string(index=False))
        print(f"\nExplaining {DEMO_TARGET} with {len(COMPARE_METHODS)} methods:\n")
        print(summary.to_string(index=False))
    print(f"\nOutputs in {args.out}/: comparison_{DEMO_TARGET}.png, smocam_{DEMO_TARGET}.nii.gz, "
          f"regions_{DEMO_TARGET}.csv, predictions.csv, ...")
    return 0
