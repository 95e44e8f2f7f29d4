"""``smocam explain``: one method's maps of one or several outputs for one scan, with figures and region tables."""
from __future__ import annotations

import os
import time
from typing import Dict

from .._io import child_path, nifti_stem, safe_name, write_csv
from .flags import add_scan_command_args, add_target_arg, smocam_kwargs
from .outputs import output_set, run_settings, staged_output
from .scan import load_inputs, predictions_table, top_regions, used_settings

__all__ = ["add_explain", "run_explain"]


def add_explain(sub) -> None:
    """Declare ``smocam explain`` and its flags."""
    p = sub.add_parser("explain", help="explain one or several outputs for one scan")
    p.add_argument("--image", required=True, help="T1 scan (NIfTI), registered to the model's space")
    add_target_arg(p, "output name or index, a comma-separated list, or 'all'")
    p.add_argument("--method", default="smocam",
                   help="smocam (default), gradcam, occlusion, saliency, smoothgrad, deeplift, integrated_gradients")
    add_scan_command_args(p, "explain")
    p.set_defaults(func=run_explain)


def run_explain(args) -> int:
    """Run ``smocam explain``: maps, figures and region tables into ``--out`` as one output set."""
    from ..methods import METHODS
    from ..nifti import save_map
    from ..pipeline import explain
    from ..plotting import plot_attribution
    from ..regions import get_region_table

    if args.method not in METHODS:
        raise ValueError(f"unknown method {args.method!r}; expected one of {', '.join(METHODS)}")
    kwargs = smocam_kwargs(args)
    inp = load_inputs(args, args.image)
    preds = predictions_table(inp.model, inp.meta, inp.x)  # refuses NaN/Inf predictions before the slow part
    stem = nifti_stem(args.image)  # the whole name less .nii/.nii.gz: scan.v1 and scan.v2 stay apart
    source = os.path.abspath(args.image)
    oset = output_set(args.out, f"{stem}_outputs.json", source, args.force)
    t0 = time.perf_counter()
    record: Dict = {}
    maps = explain(inp.model, inp.meta, inp.x, inp.targets, method=args.method, layer=inp.layer,
                   smocam_kwargs=kwargs, show_progress=not args.no_progress, record=record)
    seconds = time.perf_counter() - t0
    used = used_settings(record, inp.meta)
    with staged_output(oset, source, args.force, command="explain", model=str(args.model),
                       settings=run_settings(args, inp.model, inp.layer_name, [args.method]), used=used) as stage:
        write_csv(preds, child_path(stage, f"{stem}_predictions.csv"))
        rows = []
        for k, t in enumerate(inp.targets):
            name = inp.meta["output_names"][t]
            base = f"{stem}_{args.method}_{safe_name(name)}"
            save_map(maps[k], inp.info, child_path(stage, f"{base}.nii.gz"))
            plot_attribution(maps[k], inp.x[0, 0], title=f"{args.method}: {name}",
                             output_file=child_path(stage, f"{base}.png"))
            if inp.labels is not None:
                table = get_region_table(maps[k], inp.labels[0], inp.names, info=inp.info,
                                         labels_affine=inp.labels[1])
                write_csv(table, child_path(stage, f"{base}_regions.csv"))
                rows.append((name, top_regions(table)))
    print(f"{args.method} on {inp.layer_name}: {len(inp.targets)} map(s) in {seconds:.1f} s -> {args.out}")
    if "references" in used:
        print(f"  references: {used['references']}")
    for name, top in rows:
        print(f"  {name}: {top}")
    return 0
