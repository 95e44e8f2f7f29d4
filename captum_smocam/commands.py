"""The ``smocam explain``, ``smocam compare`` and ``smocam demo`` sub-commands.

All three write into ``--out`` through :func:`staged_output`: the files are
written in a private staging folder and published as one *output set*
(:class:`captum_smocam._outputs.OutputSet`): all of them or none, with a
manifest naming the set (``<stem>_outputs.json`` for ``explain``,
``compare_outputs.json``, ``demo_outputs.json``) moved in last, so a failed or
killed run leaves ``--out`` as it was. A set records the input it was computed
from; outputs of another input under the same names, or files no smocam
manifest lists, are not overwritten unless ``--force`` is given. Everything a
user can get wrong (a missing or unreadable scan, an unknown target or layer, a
scan that does not cover the model grid, an unusable ``--out``) is checked
before the expensive part.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from ._io import child_path, nifti_stem, safe_name, write_csv
from ._outputs import OutputSet, prepare_out

#: Methods run by ``smocam compare`` and ``smocam demo`` by default (the poster's five).
COMPARE_METHODS = ("smocam", "gradcam", "occlusion", "saliency", "deeplift")
#: The structure the demo explains (the poster's figure).
DEMO_TARGET = "right_lateral_ventricle"


def output_set(out_dir, manifest: str, source: str, overwrite: bool = False) -> OutputSet:
    """The output set ``manifest`` in ``out_dir``, after checking that ``out_dir`` is usable and that
    the set does not hold another input's outputs (unless ``overwrite``); see :func:`staged_output`."""
    out = prepare_out(out_dir)
    oset = OutputSet(out, out, manifest)
    oset.check_source(source, overwrite)
    return oset


@contextlib.contextmanager
def staged_output(oset: OutputSet, source: str, overwrite: bool = False, **record) -> Iterator[Path]:
    """Yield a staging folder whose files are published into the set's folder, all at once, on success.

    With the set's lock held: a publication a killed run left half done is
    finished or undone and stale staging folders are removed; then the block
    writes into a new staging folder, whose files are committed as the set
    (:meth:`OutputSet.commit`, ``merge=True``: other files of the same
    ``source`` stay). An exception leaves the folder as it was.

    Args:
        oset (OutputSet): from :func:`output_set`.
        source (str): the input the files are computed from (its absolute path).
        overwrite (bool, optional): replace outputs of another input, or files no
            manifest lists. Default: False
        **record: more entries for the manifest.

    Examples::

        >>> import tempfile, os
        >>> out = os.path.join(tempfile.mkdtemp(), "out")
        >>> with staged_output(output_set(out, "a_outputs.json", "/data/a.nii"), "/data/a.nii") as stage:
        ...     _ = (stage / "a.txt").write_text("x")
        >>> sorted(f for f in os.listdir(out) if not f.startswith("."))
        ['a.txt', 'a_outputs.json']
    """
    with oset:
        oset.recover()
        stage = oset.new_stage()
        try:
            yield stage
            oset.commit(stage, {"source": source, **record,
                                "written": datetime.datetime.now().isoformat(timespec="seconds")},
                        merge=True, overwrite=overwrite)
        finally:
            oset.discard(stage)


def _common_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint file or shipped model name (default: vgg)")
    p.add_argument("--layer", default=None, help="layer to explain at (default: the checkpoint's default_layer)")
    p.add_argument("--n-steps", type=int, default=None, help="SMOCAM optimisation steps (default: library default)")
    p.add_argument("--labels", default=None, help="label map (NIfTI) on the scan's grid, for region tables")
    p.add_argument("--lut", default=None, help="FreeSurferColorLUT-format file naming the labels")
    p.add_argument("--out", default="smocam-out", help="output folder (default: smocam-out)")
    p.add_argument("--force", action="store_true",
                   help="replace outputs in --out that come from another input (or that no smocam run wrote)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _smocam_kwargs(args) -> Dict:
    if args.n_steps is not None and args.n_steps < 1:
        raise ValueError(f"--n-steps must be >= 1, got {args.n_steps}")
    return {} if args.n_steps is None else {"n_steps": args.n_steps}


def _load_labels(path, info):
    """The label map of the scan (see :func:`captum_smocam.nifti.load_label_map`): ``(labels, affine)``."""
    from .nifti import load_label_map

    if path is None:
        return None
    return load_label_map(path, info)


def _label_names(lut: Optional[str]):
    from .regions import read_lut

    if lut is None:
        from .synth import LABELS

        return dict(LABELS)
    if not os.path.isfile(lut):
        raise FileNotFoundError(f"look-up table not found: {lut}")
    return read_lut(lut)


def _map_on_label_grid(map_model_grid: torch.Tensor, info, labels) -> np.ndarray:
    """A model-grid map resampled onto the label map's grid (``labels`` from :func:`_load_labels`)."""
    from .nifti import map_to_grid

    return map_to_grid(map_model_grid, info, labels[1], labels[0].shape)


def _setup(args, image):
    """Validate inputs and load everything; raises before any output is written."""
    from .nifti import load_scan
    from .pipeline import load_model, resolve_layer, resolve_targets

    model, meta = load_model(args.model)
    layer_name, layer = resolve_layer(model, meta, args.layer)
    targets = resolve_targets(meta, args.target)
    x, info = load_scan(image, meta)
    labels = _load_labels(args.labels, info) if args.labels else None
    names = _label_names(args.lut) if args.labels else None
    return model, meta, layer_name, layer, targets, x, info, labels, names


def _predictions_table(model, meta, x, truth: Optional[Dict[str, float]] = None) -> pd.DataFrame:
    from .pipeline import check_finite_outputs

    with torch.no_grad():
        out = model(x)
    check_finite_outputs(out, meta["output_names"])
    pred = out[0].tolist()
    df = pd.DataFrame({"structure": meta["output_names"], "predicted_cm3": pred})
    if truth is not None:
        df["true_cm3"] = [truth.get(n, np.nan) for n in meta["output_names"]]
        df["error_cm3"] = df["predicted_cm3"] - df["true_cm3"]
    return df


def _top_regions(table: pd.DataFrame, k: int = 3) -> str:
    """The ``k`` regions with the densest attention, as "name xR" (R = mean attention / labelled-tissue mean).

    Ranking by share would always name the largest structures (cerebral grey and white matter); the
    density ratio says which structure the map singles out. The full table has both columns.
    """
    labelled_mean = table["attention_sum"].sum() / max(int(table["n_voxels"].sum()), 1)
    if labelled_mean <= 0:
        return "(no positive attention)"
    top = table.sort_values("attention_mean", ascending=False).head(k)
    return ", ".join(f"{r.name} x{r.attention_mean / labelled_mean:.1f}" for r in top.itertuples())


# --------------------------------------------------------------------------- #
# explain
# --------------------------------------------------------------------------- #
def _add_explain(sub) -> None:
    p = sub.add_parser("explain", help="explain one or several outputs for one scan")
    p.add_argument("--image", required=True, help="T1 scan (NIfTI), registered to the model's space")
    p.add_argument("--target", required=True, help="output name or index, a comma-separated list, or 'all'")
    p.add_argument("--method", default="smocam", help="smocam (default), gradcam, occlusion, saliency, deeplift, integrated_gradients")
    _common_model_args(p)
    p.set_defaults(func=_run_explain)


def _run_explain(args) -> int:
    from .methods import METHODS
    from .nifti import save_map
    from .pipeline import explain
    from .plotting import plot_attribution
    from .regions import get_region_table

    if args.method not in METHODS:
        raise ValueError(f"unknown method {args.method!r}; expected one of {', '.join(METHODS)}")
    kwargs = _smocam_kwargs(args)
    model, meta, layer_name, layer, targets, x, info, labels, names = _setup(args, args.image)
    preds = _predictions_table(model, meta, x)  # refuses NaN/Inf predictions before the slow part
    stem = nifti_stem(args.image)  # the whole name less .nii/.nii.gz: scan.v1 and scan.v2 stay apart
    source = os.path.abspath(args.image)
    oset = output_set(args.out, f"{stem}_outputs.json", source, args.force)
    t0 = time.perf_counter()
    maps = explain(model, meta, x, targets, method=args.method, layer=layer, smocam_kwargs=kwargs,
                   show_progress=not args.quiet)
    seconds = time.perf_counter() - t0
    with staged_output(oset, source, args.force, command="explain", model=str(args.model or "vgg")) as stage:
        write_csv(preds, child_path(stage, f"{stem}_predictions.csv"))
        rows = []
        for k, t in enumerate(targets):
            name = meta["output_names"][t]
            base = f"{stem}_{args.method}_{safe_name(name)}"
            save_map(maps[k], info, child_path(stage, f"{base}.nii.gz"))
            plot_attribution(maps[k], x[0, 0], title=f"{args.method}: {name}",
                             output_file=child_path(stage, f"{base}.png"))
            if labels is not None:
                table = get_region_table(_map_on_label_grid(maps[k], info, labels), labels[0], names)
                write_csv(table, child_path(stage, f"{base}_regions.csv"))
                rows.append((name, _top_regions(table)))
    print(f"{args.method} on {layer_name}: {len(targets)} map(s) in {seconds:.1f} s -> {args.out}")
    for name, top in rows:
        print(f"  {name}: {top}")
    return 0


# --------------------------------------------------------------------------- #
# compare (and the demo, which is compare on a built-in subject)
# --------------------------------------------------------------------------- #
def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="all methods side by side for one scan and one output")
    p.add_argument("--image", required=True, help="T1 scan (NIfTI), registered to the model's space")
    p.add_argument("--target", required=True, help="output name or index")
    p.add_argument("--methods", default=",".join(COMPARE_METHODS), help="comma-separated methods")
    _common_model_args(p)
    p.set_defaults(func=_run_compare)


def _parse_methods(spec: str) -> List[str]:
    from .methods import METHODS

    methods = [m.strip() for m in spec.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"unknown method(s) {bad or spec!r}; expected some of {', '.join(METHODS)}")
    return methods


def _compare(model, meta, layer, x, info, target: int, methods: Sequence[str], stage: Path, *,
             labels=None, names=None, outline=None, smocam_kwargs=None, show_progress=True,
             occlusion_kwargs=None) -> pd.DataFrame:
    """Run every method, write maps, figures and tables into ``stage``; return the summary table."""
    from .methods import METHOD_LABELS, attribute_map
    from .nifti import save_map
    from .plotting import plot_comparison, plot_convergence, plot_region_attention
    from .regions import get_region_table

    name = meta["output_names"][target]
    fname = safe_name(name)  # in file names; titles keep the name as the checkpoint spells it
    std = torch.tensor(meta["output_std"], dtype=torch.float32)
    maps, rows, tables = {}, [], []
    for method in methods:
        history: Dict = {}
        t0 = time.perf_counter()
        m = attribute_map(method, model, x, target, layer=layer, output_std=std,
                          smocam_kwargs=smocam_kwargs, show_progress=show_progress, history=history,
                          **(occlusion_kwargs if method == "occlusion" else {}))
        seconds = time.perf_counter() - t0
        maps[METHOD_LABELS[method]] = m[0, 0]
        save_map(m[0], info, child_path(stage, f"{method}_{fname}.nii.gz"))
        row = {"method": method, "seconds": round(seconds, 2)}  # top_regions: densest, see _top_regions
        if labels is not None:
            table = get_region_table(_map_on_label_grid(m[0], info, labels), labels[0], names)
            table.insert(0, "method", method)
            tables.append(table)
            row["top_regions"] = _top_regions(table)
            if method == "smocam":
                plot_region_attention(table, title=f"SMOCAM attention: {name}",
                                      output_file=child_path(stage, f"smocam_{fname}_regions.png"))
        if method == "smocam" and history:
            plot_convergence(history, title=f"SMOCAM objective: {name}",
                             output_file=child_path(stage, f"smocam_{fname}_convergence.png"))
        rows.append(row)
    # Cut through the structure when it is known, else through the first map's maximum.
    cuts = None
    if outline is not None and bool(outline.any()):
        cuts = tuple(int(round(float(c))) for c in torch.nonzero(outline).float().mean(dim=0))
    plot_comparison(maps, x[0, 0], outline=outline, cut_coords=cuts, title=f"{name}: where each method looks",
                    output_file=child_path(stage, f"comparison_{fname}.png"))
    if tables:
        write_csv(pd.concat(tables, ignore_index=True), child_path(stage, f"regions_{fname}.csv"))
    summary = pd.DataFrame(rows)
    write_csv(summary, child_path(stage, f"methods_{fname}.csv"))
    return summary


def _run_compare(args) -> int:
    methods = _parse_methods(args.methods)
    kwargs = _smocam_kwargs(args)
    model, meta, layer_name, layer, targets, x, info, labels, names = _setup(args, args.image)
    if len(targets) != 1:
        raise ValueError(f"compare explains one output; got {len(targets)} targets from {args.target!r}")
    preds = _predictions_table(model, meta, x)  # refuses NaN/Inf predictions before the slow part
    source = os.path.abspath(args.image)
    oset = output_set(args.out, "compare_outputs.json", source, args.force)
    with staged_output(oset, source, args.force, command="compare", model=str(args.model or "vgg")) as stage:
        write_csv(preds, stage / "predictions.csv")
        summary = _compare(model, meta, layer, x, info, targets[0], methods, stage, labels=labels, names=names,
                           smocam_kwargs=kwargs, show_progress=not args.quiet)
    print(summary.to_string(index=False))
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job on the shipped model and a built-in subject")
    p.add_argument("--out", default="smocam-demo", help="output folder (default: smocam-demo)")
    p.add_argument("--model", default=None, help="checkpoint file or shipped model name (default: vgg)")
    p.add_argument("--quick", action="store_true", help="fewer SMOCAM steps and a coarser occlusion, for a smoke test")
    p.add_argument("--force", action="store_true", help="replace files in --out that no smocam demo wrote")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from .benchmarking.data import structure_mask
    from .nifti import load_scan
    from .pipeline import load_model, resolve_layer, resolve_targets
    from .synth import generate_subject, write_lut, write_subject

    model, meta = load_model(args.model)
    layer_name, layer = resolve_layer(model, meta)
    (target,) = resolve_targets(meta, DEMO_TARGET)
    index = int(meta.get("splits", {}).get("test", [20000])[0])
    subject = generate_subject(index, lr_correlation=float(meta.get("lr_correlation", 0.95)))
    smocam_kwargs = {"n_steps": 20} if args.quick else None
    occlusion = {"occlusion_window": 12, "occlusion_stride": 12} if args.quick else {}
    oset = output_set(args.out, "demo_outputs.json", "smocam demo", args.force)
    with staged_output(oset, "smocam demo", args.force, command="demo", model=str(args.model or "vgg"),
                       subject=index) as stage:
        t1_path, lab_path = write_subject(subject, stage)
        write_lut(stage / "labels.txt")
        x, info = load_scan(t1_path, meta)
        labels = _load_labels(lab_path, info)
        outline = torch.from_numpy(structure_mask(subject, DEMO_TARGET))
        preds = _predictions_table(model, meta, x, truth=subject.volumes)
        write_csv(preds, stage / "predictions.csv")
        summary = _compare(model, meta, layer, x, info, target, COMPARE_METHODS, stage, labels=labels,
                           names=_label_names(None), outline=outline, smocam_kwargs=smocam_kwargs,
                           show_progress=not args.quiet, occlusion_kwargs=occlusion)
    with pd.option_context("display.width", 160, "display.max_colwidth", 80):
        print(f"Built-in subject {Path(t1_path).name.split('_')[0]} (synthetic, seed {index}); "
              f"model {meta['arch']} explained at {layer_name}.\n")
        print(preds.round(2).to_string(index=False))
        print(f"\nExplaining {DEMO_TARGET} with {len(COMPARE_METHODS)} methods:\n")
        print(summary.to_string(index=False))
    print(f"\nOutputs in {args.out}/: comparison_{DEMO_TARGET}.png, smocam_{DEMO_TARGET}.nii.gz, "
          f"regions_{DEMO_TARGET}.csv, predictions.csv, ...")
    return 0

