"""The sub-commands of ``smocam``: ``demo``, ``explain``, ``compare``, ``cohort``, ``synth``, ``references``
and ``report``.

Each is a pair of functions: ``_add_<name>(subparsers)`` declares its
arguments and ``_run_<name>(args)`` does the work; :data:`captum_smocam.cli.SUBCOMMANDS`
lists them. A flag means one thing everywhere, declared once by the
``_add_*_args`` helpers below: ``--model``, ``--layer``, ``--target``,
``--objective``, ``--n-steps``, ``--labels``, ``--lut``, and ``--out``,
``--force``, ``--device`` and ``--no-progress`` on every command that
computes. Renamed flags keep their old spelling for one release, with a
warning on use (:data:`DEPRECATED_FLAGS`). SMOCAM gets only the settings the
user gave (:func:`captum_smocam.pipeline.smocam_settings`); the others are the
objective's defaults.

``explain``, ``compare`` and ``demo`` write into ``--out`` through
:func:`staged_output`: the files are written in a private staging folder and
published as one *output set* (:class:`captum_smocam._outputs.OutputSet`): all
of them or none, with a manifest naming the set (``<stem>_outputs.json`` for
``explain``, ``compare_outputs.json``, ``demo_outputs.json``) moved in last, so
a failed or killed run leaves ``--out`` as it was. A set records the input it
was computed from; outputs of another input under the same names, or files no
smocam manifest lists, are not overwritten unless ``--force`` is given.
Everything a user can get wrong (a missing or unreadable scan, an unknown
target or layer, a scan that does not cover the model grid, an unusable
``--out``) is checked before the expensive part. ``cohort`` runs
:func:`captum_smocam.cohort.run_cohort`; ``synth`` writes a synthetic cohort
(:func:`captum_smocam.synth.write_cohort`); ``references`` writes a copy of a
checkpoint carrying reference scans built from the user's own
(:func:`captum_smocam.references.attach_references`); ``report`` writes one HTML page of
a cohort run (:func:`captum_smocam.report.write_report`), as ``cohort --report`` does at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from ._io import child_path, nifti_stem, safe_name, write_csv
from ._outputs import OutputSet, prepare_out
from .cohort import DEFAULT_OUT as COHORT_OUT
from .pipeline import DEFAULT_MODEL, DEVICES
from .smocam import DEFAULT_OBJECTIVE, OBJECTIVE_DEFAULTS, OBJECTIVES

#: Methods run by ``smocam compare`` and ``smocam demo`` by default (the poster's five, SmoothGrad and IG).
COMPARE_METHODS = ("smocam", "gradcam", "occlusion", "saliency", "smoothgrad", "deeplift", "integrated_gradients")
#: The structure the demo explains (the poster's figure).
DEMO_TARGET = "right_lateral_ventricle"
#: ``--out`` when it is not given, per command.
DEFAULT_OUT = {"explain": "smocam-out", "compare": "smocam-out", "demo": "smocam-demo", "cohort": COHORT_OUT}
#: Old spelling -> new spelling of the renamed flags (``--quiet`` of explain, compare and demo; ``--targets``
#: of cohort): the old one still works for one release, with a warning.
DEPRECATED_FLAGS = {"--quiet": "--no-progress", "--targets": "--target"}


class CLIError(Exception):
    """An error the user can fix; printed as one line."""


# --------------------------------------------------------------------------- #
# Shared arguments
# --------------------------------------------------------------------------- #
class _DeprecatedFlag(argparse.Action):
    """The old spelling of a renamed flag: does what the new one does, and says so on stderr."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"smocam: warning: {option_string} is deprecated and goes in the next release; use "
              f"{DEPRECATED_FLAGS[option_string]}", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def _add_flag(p: argparse.ArgumentParser, flag: str, *, old: Optional[str] = None, **kwargs) -> None:
    """``p.add_argument(flag, ...)``, and its old spelling ``old`` (see :data:`DEPRECATED_FLAGS`), hidden from --help."""
    p.add_argument(flag, **kwargs)
    if old is not None:
        store_true = kwargs.get("action") == "store_true"
        p.add_argument(old, dest=flag.lstrip("-").replace("-", "_"), action=_DeprecatedFlag,
                       nargs=0 if store_true else None, const=True if store_true else None, help=argparse.SUPPRESS)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="CKPT_OR_NAME",
                   help=f"checkpoint file (any architecture, see docs/own-model.md) or shipped model name "
                        f"(default: {DEFAULT_MODEL})")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="also read a checkpoint that can run code when loaded (a whole pickled module, or a "
                        "factory that is a function); only for files you made or trust")
    p.add_argument("--layer", default=None, metavar="NAME",
                   help="layer to explain at (default: the checkpoint's default_layer)")


def _add_target_arg(p: argparse.ArgumentParser, what: str, default: Optional[str] = None,
                    old: Optional[str] = None) -> None:
    _add_flag(p, "--target", old=old, required=default is None, default=default, metavar="TARGET",
              help=what + (f" ({old} is the old spelling)" if old else ""))


def _add_smocam_args(p: argparse.ArgumentParser) -> None:
    steps = ", ".join(f"{o} {OBJECTIVE_DEFAULTS[o]['n_steps']}" for o in OBJECTIVES)
    p.add_argument("--objective", choices=OBJECTIVES, default=DEFAULT_OBJECTIVE,
                   help=f"SMOCAM's objective (default: {DEFAULT_OBJECTIVE}; see docs/method.md)")
    p.add_argument("--n-steps", type=int, default=None, metavar="N",
                   help=f"SMOCAM optimisation steps (default: the objective's: {steps})")


def _add_label_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", default=None, help="label map (NIfTI) on the scan's grid, for region tables")
    p.add_argument("--lut", default=None, metavar="FILE",
                   help="FreeSurferColorLUT-format label names (default: labels.txt beside the label map)")


def _add_run_args(p: argparse.ArgumentParser, command: str, force_help: str, old_progress: Optional[str] = None
                  ) -> None:
    """``--out``, ``--force``, ``--device`` and ``--no-progress``: every command that computes has them."""
    p.add_argument("--out", default=DEFAULT_OUT[command], metavar="DIR",
                   help=f"output folder (default: {DEFAULT_OUT[command]})")
    p.add_argument("--force", action="store_true", help=force_help)
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto (default): CUDA when available, else cpu")
    _add_flag(p, "--no-progress", old=old_progress, action="store_true",
              help="no progress bars" + (f" ({old_progress} is the old spelling)" if old_progress else ""))


def _smocam_kwargs(args) -> Dict:
    """What the user gave of SMOCAM's settings, checked (see :func:`captum_smocam.pipeline.smocam_settings`)."""
    from .pipeline import smocam_settings

    if args.n_steps is not None and args.n_steps < 1:
        raise ValueError(f"--n-steps must be >= 1, got {args.n_steps}")
    return smocam_settings(args.objective, n_steps=args.n_steps)[0]


def run_settings(args, model, layer_name: str, methods: Sequence[str]) -> Dict:
    """What a run's maps depend on beyond the scan: recorded in the manifest; a rerun with other settings
    replaces the output set as a whole (see :func:`staged_output`)."""
    from .pipeline import smocam_settings

    refs = getattr(model, "reference_inputs", None)
    labels = getattr(args, "labels", None)
    lut = getattr(args, "lut", None)
    return {
        "methods": list(methods),
        "model": str(args.model),
        "layer": layer_name,
        **({"smocam": smocam_settings(args.objective, n_steps=args.n_steps)[1]} if "smocam" in methods else {}),
        "references": (f"the model's reference_inputs ({int(refs.shape[0])} scans)"
                       if isinstance(refs, torch.Tensor) else "shifted copies of the scan"),
        "labels": os.path.abspath(labels) if labels else None,
        "lut": os.path.abspath(lut) if lut else None,
    }


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
    (:meth:`OutputSet.commit`): other files of the same ``source`` stay only
    when the old set was made with the same ``settings`` (a ``record`` entry:
    method, model, layer, objective and its settings, references, labels);
    otherwise the old set is replaced as a whole, so no file of a run with
    other settings is left looking current. An exception leaves the folder as
    it was.

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
            old = oset.read_manifest() or {}
            oset.commit(stage, {"source": source, **record,
                                "written": datetime.datetime.now().isoformat(timespec="seconds")},
                        merge=old.get("settings") == record.get("settings"), overwrite=overwrite)
        finally:
            oset.discard(stage)


def _used(record: Dict, meta: Dict) -> Dict:
    """What a map was computed with, for manifests: ``{"methods": {method: settings}, "references": ...}``.

    ``record`` is what :func:`captum_smocam.methods.attribute_map` filled (for
    several targets of one method, the same); ``"references"`` is there for
    SMOCAM only (:func:`captum_smocam.references.describe_references`).
    """
    from .references import describe_references

    out: Dict = {"methods": {record["method"]: record.get("settings", {})}} if "method" in record else {"methods": {}}
    if "reference_source" in record:
        out["references"] = describe_references(record["reference_source"], meta)
    return out


def _label_names(lut: Optional[str], label_path: Optional[str]) -> Optional[Dict[int, str]]:
    """Label names from ``--lut``, else from ``labels.txt`` beside the label map, else None (``label_<k>``)."""
    from .regions import read_lut

    if lut is None:
        beside = Path(label_path).parent / "labels.txt" if label_path is not None else None
        return read_lut(beside) if beside is not None and beside.is_file() else None
    if not os.path.isfile(lut):
        raise FileNotFoundError(f"look-up table not found: {lut}")
    return read_lut(lut)


def _setup(args, image):
    """Validate inputs and load everything; raises before any output is written."""
    from .nifti import load_label_map, load_scan
    from .pipeline import load_model, resolve_device, resolve_layer, resolve_targets

    device = resolve_device(args.device)
    model, meta = load_model(args.model, trust_checkpoint=getattr(args, "trust_checkpoint", False))
    layer_name, layer = resolve_layer(model, meta, args.layer)
    targets = resolve_targets(meta, args.target)
    x, info = load_scan(image, meta)
    labels = load_label_map(args.labels, info) if args.labels else None
    names = _label_names(args.lut, args.labels) if args.labels else None
    return model.to(device), meta, layer_name, layer, targets, x.to(device), info, labels, names


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
    _add_target_arg(p, "output name or index, a comma-separated list, or 'all'")
    p.add_argument("--method", default="smocam",
                   help="smocam (default), gradcam, occlusion, saliency, smoothgrad, deeplift, integrated_gradients")
    _add_model_args(p)
    _add_smocam_args(p)
    _add_label_args(p)
    _add_run_args(p, "explain", "replace outputs in --out that come from another input (or that no smocam run wrote)",
                  old_progress="--quiet")
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
    record: Dict = {}
    maps = explain(model, meta, x, targets, method=args.method, layer=layer, smocam_kwargs=kwargs,
                   show_progress=not args.no_progress, record=record)
    seconds = time.perf_counter() - t0
    used = _used(record, meta)
    with staged_output(oset, source, args.force, command="explain", model=str(args.model),
                       settings=run_settings(args, model, layer_name, [args.method]), used=used) as stage:
        write_csv(preds, child_path(stage, f"{stem}_predictions.csv"))
        rows = []
        for k, t in enumerate(targets):
            name = meta["output_names"][t]
            base = f"{stem}_{args.method}_{safe_name(name)}"
            save_map(maps[k], info, child_path(stage, f"{base}.nii.gz"))
            plot_attribution(maps[k], x[0, 0], title=f"{args.method}: {name}",
                             output_file=child_path(stage, f"{base}.png"))
            if labels is not None:
                table = get_region_table(maps[k], labels[0], names, info=info, labels_affine=labels[1])
                write_csv(table, child_path(stage, f"{base}_regions.csv"))
                rows.append((name, _top_regions(table)))
    print(f"{args.method} on {layer_name}: {len(targets)} map(s) in {seconds:.1f} s -> {args.out}")
    if "references" in used:
        print(f"  references: {used['references']}")
    for name, top in rows:
        print(f"  {name}: {top}")
    return 0


# --------------------------------------------------------------------------- #
# compare (and the demo, which is compare on a built-in subject)
# --------------------------------------------------------------------------- #
def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="all methods side by side for one scan and one output")
    p.add_argument("--image", required=True, help="T1 scan (NIfTI), registered to the model's space")
    _add_target_arg(p, "output name or index")
    p.add_argument("--methods", default=",".join(COMPARE_METHODS), help="comma-separated methods")
    _add_model_args(p)
    _add_smocam_args(p)
    _add_label_args(p)
    _add_run_args(p, "compare", "replace outputs in --out that come from another input (or that no smocam run wrote)",
                  old_progress="--quiet")
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
             occlusion_kwargs=None, used: Optional[Dict] = None) -> pd.DataFrame:
    """Run every method, write maps, figures and tables into ``stage``; return the summary table.

    ``used`` (a dict) is filled with what each method ran with and SMOCAM's references (:func:`_used`).
    """
    from .methods import METHOD_LABELS, attribute_map
    from .nifti import save_map
    from .plotting import plot_comparison, plot_convergence, plot_region_attention
    from .regions import get_region_table

    name = meta["output_names"][target]
    fname = safe_name(name)  # in file names; titles keep the name as the checkpoint spells it
    std = torch.tensor(meta.get("output_std", [1.0] * len(meta["output_names"])), dtype=torch.float32)  # as explain
    maps, rows, tables = {}, [], []
    for method in methods:
        history: Dict = {}
        record: Dict = {}
        t0 = time.perf_counter()
        m = attribute_map(method, model, x, target, layer=layer, output_std=std,
                          smocam_kwargs=smocam_kwargs, show_progress=show_progress, history=history, record=record,
                          **((occlusion_kwargs or {}) if method == "occlusion" else {}))
        seconds = time.perf_counter() - t0
        maps[METHOD_LABELS[method]] = m[0, 0]
        save_map(m[0], info, child_path(stage, f"{method}_{fname}.nii.gz"))
        row = {"method": method, "seconds": round(seconds, 2)}  # top_regions: densest, see _top_regions
        this = _used(record, meta)
        if "references" in this:
            row["references"] = this["references"]
        if used is not None:
            used.setdefault("methods", {}).update(this["methods"])
            if "references" in this:
                used["references"] = this["references"]
        if labels is not None:
            table = get_region_table(m[0], labels[0], names, info=info, labels_affine=labels[1])
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
    used: Dict = {}
    with staged_output(oset, source, args.force, command="compare", model=str(args.model),
                       settings=run_settings(args, model, layer_name, methods), used=used) as stage:
        write_csv(preds, stage / "predictions.csv")
        summary = _compare(model, meta, layer, x, info, targets[0], methods, stage, labels=labels, names=names,
                           smocam_kwargs=kwargs, show_progress=not args.no_progress, used=used)
    print(summary.to_string(index=False))
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job on the shipped model and a built-in subject")
    _add_model_args(p)
    p.add_argument("--quick", action="store_true",
                   help="fewer SMOCAM steps (20, unless --n-steps) and a coarser occlusion, for a smoke test")
    _add_smocam_args(p)
    _add_run_args(p, "demo", "replace files in --out that no smocam demo wrote", old_progress="--quiet")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from .synth import structure_mask
    from .nifti import load_label_map, load_scan
    from .pipeline import load_model, resolve_device, resolve_layer, resolve_targets
    from .synth import generate_subject, write_lut, write_subject

    if args.quick and args.n_steps is None:
        args.n_steps = 20
    smocam_kwargs = _smocam_kwargs(args)
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
        labels = load_label_map(lab_path, info)
        outline = torch.from_numpy(structure_mask(subject, DEMO_TARGET))
        preds = _predictions_table(model, meta, x, truth=subject.volumes)
        write_csv(preds, stage / "predictions.csv")
        summary = _compare(model, meta, layer, x, info, target, COMPARE_METHODS, stage, labels=labels,
                           names=_label_names(None, lab_path), outline=outline, smocam_kwargs=smocam_kwargs,
                           show_progress=not args.no_progress, occlusion_kwargs=occlusion, used=used)
    with pd.option_context("display.width", 160, "display.max_colwidth", 80):
        print(f"Built-in subject {Path(t1_path).name.split('_')[0]} (synthetic, seed {index}); "
              f"model {meta['arch']} explained at {layer_name}.\n")
        print(preds.round(2).to_string(index=False))
        print(f"\nExplaining {DEMO_TARGET} with {len(COMPARE_METHODS)} methods:\n")
        print(summary.to_string(index=False))
    print(f"\nOutputs in {args.out}/: comparison_{DEMO_TARGET}.png, smocam_{DEMO_TARGET}.nii.gz, "
          f"regions_{DEMO_TARGET}.csv, predictions.csv, ...")
    return 0


# --------------------------------------------------------------------------- #
# cohort
# --------------------------------------------------------------------------- #
def _add_cohort(sub) -> None:
    from .cohort_inputs import PAIRINGS

    p = sub.add_parser(
        "cohort",
        help="SMOCAM maps, region tables and predictions for every scan of a cohort (resumable; torchrun shards)",
        description=(
            "Explain every scan of a cohort: per scan, maps (one NIfTI per target on the scan's grid), a region "
            "table and predictions; then cohort tables (mean and sd per region) and a summary figure. Complete "
            "scans are skipped on a rerun. Under torchrun --nproc_per_node=N the scans are sharded across ranks."
        ),
    )
    p.add_argument("--images", nargs="+", required=True, metavar="GLOB_OR_LIST",
                   help="T1 scans: globs (quote them), .txt list files or paths")
    _add_target_arg(p, "outputs to explain: 'all' or comma-separated names/indices (default: all)", default="all",
                    old="--targets")
    _add_model_args(p)
    _add_smocam_args(p)
    p.add_argument("--internal-batch-size", type=int, default=None, metavar="B",
                   help="at most B masks optimised at once (bounds memory; default: all)")
    p.add_argument("--labels", nargs="+", default=None, metavar="GLOB",
                   help="label maps on the scans' grids, paired by subject id (sub-XX[_ses-YY] or file stem); "
                        "a scan without one gets no region table")
    p.add_argument("--pair-labels", choices=PAIRINGS, default="id",
                   help="id (default): pair label maps with scans by subject id and refuse ambiguous pairings; "
                        "sorted: pair the i-th scan with the i-th label map in sorted order")
    p.add_argument("--lut", default=None, metavar="FILE",
                   help="FreeSurferColorLUT-format label names (default: labels.txt beside the label maps)")
    _add_run_args(p, "cohort", "redo scans that are already complete")
    p.add_argument("--report", action="store_true", help="write <out>/report.html at the end (smocam report)")
    p.set_defaults(func=_run_cohort)


def _run_cohort(args) -> int:
    """Run ``smocam cohort``; exit status 1 if any scan failed (rank 0), else 0."""
    from .cohort import run_cohort

    if args.n_steps is not None and args.n_steps < 1:
        raise ValueError(f"--n-steps must be >= 1, got {args.n_steps}")
    res = run_cohort(
        args.images, args.model, args.target, labels=args.labels, lut=args.lut, out=args.out,
        layer=args.layer, objective=args.objective, n_steps=args.n_steps,
        internal_batch_size=args.internal_batch_size, device=args.device, force=args.force,
        show_progress=not args.no_progress, pair_labels=args.pair_labels, trust_checkpoint=args.trust_checkpoint,
    )
    if res["rank"] != 0:
        return 0
    print(f"smocam cohort: {res['n_done']} done, {res['n_skipped']} skipped (complete), "
          f"{res['n_failed']} failed; results in {res['out']}", file=sys.stderr)
    if args.report:
        from .report import write_report

        try:
            print(f"smocam cohort: report in {write_report(res['out'], show_progress=not args.no_progress)}",
                  file=sys.stderr)
        except ValueError as exc:  # e.g. every scan failed: the run's own status says so
            print(f"smocam cohort: no report: {exc}", file=sys.stderr)
    return 1 if res["n_failed"] else 0


# --------------------------------------------------------------------------- #
# synth
# --------------------------------------------------------------------------- #
def _add_synth(sub) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic T1 cohort with exact structure volumes",
        description="Write sub-XXXX_T1w.nii.gz and sub-XXXX_labels.nii.gz per subject, "
        "labels.txt (FreeSurferColorLUT format) and volumes.csv (cm3).",
    )
    p.add_argument("--n", type=int, required=True, help="number of subjects (>= 1)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="cohort seed (>= 0). Default: 0")
    p.add_argument(
        "--lr-correlation",
        type=float,
        default=None,
        help="correlation of left/right volume changes in [-1, 1]. Default: 0.95",
    )
    p.add_argument("--spacing", type=float, default=None, help="voxel size in mm. Default: 3.0")
    p.add_argument("--grid", choices=("native", "mni1mm", "mni2mm"), default="native",
                   help="native (default): the cropped RAS grid at --spacing; mni2mm / mni1mm: FSL's MNI152 "
                        "2 mm (91 x 109 x 91) / 1 mm (182 x 218 x 182) grids (LAS)")
    p.add_argument("--label-codes", choices=("synth", "freesurfer"), default="synth",
                   help="synth (default): labels 1-16; freesurfer: aseg codes (17/53 hippocampi, 4/43 lateral "
                        "ventricles, ...) with a matching labels.txt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_synth)


def _run_synth(args) -> int:
    from . import synth

    r = synth.DEFAULT_LR_CORRELATION if args.lr_correlation is None else args.lr_correlation
    spacing = synth.DEFAULT_SPACING if args.spacing is None else args.spacing
    # Check every value before anything is written.
    if args.n < 1:
        raise CLIError(f"--n must be >= 1, got {args.n}")
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    if not -1.0 <= r <= 1.0:
        raise CLIError(f"--lr-correlation must be in [-1, 1], got {r}")
    if args.grid != "native" and args.spacing is not None:
        raise CLIError(f"--spacing sets the native grid's voxel size; --grid {args.grid} has its own "
                       f"(give one of them)")
    synth.default_grid(spacing)  # raises ValueError on a bad spacing
    table = synth.write_cohort(args.out, args.n, seed=args.seed, lr_correlation=r, spacing=spacing,
                               show_progress=not args.no_progress, grid=args.grid, label_codes=args.label_codes)
    print(f"wrote {len(table)} subjects, labels.txt and volumes.csv to {args.out}")
    return 0


# --------------------------------------------------------------------------- #
# references
# --------------------------------------------------------------------------- #
def _add_references(sub) -> None:
    from .references import DEFAULT_K

    p = sub.add_parser(
        "references",
        help="attach K reference scans, built from your own NIfTI scans, to a checkpoint",
        description=(
            "Build K reference inputs for SMOCAM from a folder or list of your scans, preprocessed exactly as "
            "'smocam explain' preprocesses a scan, and write a copy of the checkpoint that carries them "
            "(with which files, when and how in its metadata). Use scans of the model's population, not the "
            "ones you will explain."
        ),
    )
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="CKPT_OR_NAME",
                   help=f"checkpoint file or shipped model name (default: {DEFAULT_MODEL})")
    p.add_argument("--scans", nargs="+", required=True, metavar="DIR_OR_GLOB_OR_LIST",
                   help="a folder (its *_T1w.nii[.gz], else every .nii[.gz]), globs (quote them), .txt list "
                        "files or paths")
    p.add_argument("--k", type=int, default=DEFAULT_K, help=f"number of references (default: {DEFAULT_K})")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw of K scans among them (default: 0)")
    p.add_argument("--out", required=True, metavar="FILE", help="the checkpoint to write (.pt)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=_run_references)


def _run_references(args) -> int:
    from .references import PROVENANCE_KEY, attach_references

    meta = attach_references(args.model, args.scans, args.out, k=args.k, seed=args.seed, overwrite=args.force)
    prov = meta[PROVENANCE_KEY]
    print(f"wrote {args.out}: {args.model} with {meta['n_reference_inputs']} reference inputs drawn (seed "
          f"{prov['seed']}) from {prov['n_candidates']} scans:")
    for f in prov["files"]:
        print(f"  {f}")
    return 0


# --------------------------------------------------------------------------- #
# report
# --------------------------------------------------------------------------- #
def _add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="one self-contained HTML report of a smocam cohort run (maps, regions, predictions, atypical subjects)",
        description="Read a finished smocam cohort folder and write one HTML file, figures embedded, no network "
                    "needed: per target the cohort mean map, region shares, predictions (errors and R2 with "
                    "--truth) and each subject's atypicality; then the run's settings and failed scans.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of a smocam cohort run")
    p.add_argument("--truth", default=None, metavar="CSV",
                   help="true values: a 'subject' column and one column per target (volumes.csv of smocam synth)")
    p.add_argument("--out", default=None, metavar="FILE", help="the HTML file (default: RUN_DIR/report.html)")
    p.add_argument("--top-k", type=int, default=None, metavar="N",
                   help="most atypical subjects shown beside the cohort mean, per target (default: 3)")
    p.add_argument("--background", default="template", metavar="TEMPLATE_OR_SUBJECT",
                   help="drawn under the maps: 'template' (MNI152, default) or a subject id of the run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_report)


def _run_report(args) -> int:
    from .report import DEFAULT_TOP_K, write_report

    top_k = DEFAULT_TOP_K if args.top_k is None else args.top_k
    if top_k < 0:
        raise ValueError(f"--top-k must be >= 0, got {top_k}")
    path = write_report(args.run_dir, args.out, args.truth, top_k=top_k, background=args.background,
                        show_progress=not args.no_progress)
    print(f"smocam report: {path}")
    return 0
