"""One scan with its model, loaded and checked before a command writes anything, and what it is summarised by.

:func:`load_inputs` resolves the device, model, layer and targets, reads the
scan onto the model grid and, with ``--labels``, its label map and their names;
everything a user can get wrong (a missing or unreadable scan, an unknown
target or layer, a scan that does not cover the model grid) fails here, before
the expensive part. :func:`predictions_table`, :func:`top_regions` and
:func:`used_settings` turn a run into what the commands print and record.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd
import torch

__all__ = ["Inputs", "load_inputs", "label_names", "predictions_table", "top_regions", "used_settings"]


@dataclass(frozen=True)
class Inputs:
    """What :func:`load_inputs` loaded: the model on its device, its description, the layer, the targets, the
    scan (``1 x 1 x H x W x D`` on the device) with its grid ``info``, and the label map with its names."""

    model: torch.nn.Module
    meta: Dict[str, Any]
    layer_name: str
    layer: torch.nn.Module
    targets: List[int]
    x: torch.Tensor
    info: Any
    labels: Optional[tuple] = None  # (label array, its affine), from load_label_map
    names: Optional[Dict[int, str]] = None


def label_names(lut: Optional[str], label_path: Optional[str]) -> Optional[Dict[int, str]]:
    """Label names from ``--lut``, else from ``labels.txt`` beside the label map, else None (``label_<k>``)."""
    from ..regions import read_lut

    if lut is None:
        beside = Path(label_path).parent / "labels.txt" if label_path is not None else None
        return read_lut(beside) if beside is not None and beside.is_file() else None
    if not os.path.isfile(lut):
        raise FileNotFoundError(f"look-up table not found: {lut}")
    return read_lut(lut)


def load_inputs(args, image) -> Inputs:
    """Validate the inputs of ``explain`` / ``compare`` and load everything; raises before any output is written."""
    from ..nifti import load_label_map, load_scan
    from ..pipeline import load_model, resolve_device, resolve_layer, resolve_targets

    device = resolve_device(args.device)
    model, meta = load_model(args.model, trust_checkpoint=getattr(args, "trust_checkpoint", False))
    layer_name, layer = resolve_layer(model, meta, args.layer)
    targets = resolve_targets(meta, args.target)
    x, info = load_scan(image, meta)
    labels = load_label_map(args.labels, info) if args.labels else None
    names = label_names(args.lut, args.labels) if args.labels else None
    return Inputs(model.to(device), meta, layer_name, layer, targets, x.to(device), info, labels, names)


def predictions_table(model, meta, x, truth: Optional[Dict[str, float]] = None) -> pd.DataFrame:
    """The model's prediction of every output for ``x`` (refuses NaN/Inf), with the truth and error if given."""
    from ..pipeline import check_finite_outputs

    with torch.no_grad():
        out = model(x)
    check_finite_outputs(out, meta["output_names"])
    pred = out[0].tolist()
    df = pd.DataFrame({"structure": meta["output_names"], "predicted_cm3": pred})
    if truth is not None:
        df["true_cm3"] = [truth.get(n, np.nan) for n in meta["output_names"]]
        df["error_cm3"] = df["predicted_cm3"] - df["true_cm3"]
    return df


def top_regions(table: pd.DataFrame, k: int = 3) -> str:
    """The ``k`` regions with the densest attention, as "name xR" (R = mean attention / labelled-tissue mean).

    Ranking by share would always name the largest structures (cerebral grey and white matter); the
    density ratio says which structure the map singles out. The full table has both columns.
    """
    labelled_mean = table["attention_sum"].sum() / max(int(table["n_voxels"].sum()), 1)
    if labelled_mean <= 0:
        return "(no positive attention)"
    top = table.sort_values("attention_mean", ascending=False).head(k)
    return ", ".join(f"{r.name} x{r.attention_mean / labelled_mean:.1f}" for r in top.itertuples())


def used_settings(record: Dict, meta: Dict) -> Dict:
    """What a map was computed with, for manifests: ``{"methods": {method: settings}, "references": ...}``.

    ``record`` is what :func:`captum_smocam.methods.attribute_map` filled (for
    several targets of one method, the same); ``"references"`` is there for
    SMOCAM only (:func:`captum_smocam.references.describe_references`).
    """
    from ..references import describe_references

    out: Dict = {"methods": {record["method"]: record.get("settings", {})}} if "method" in record else {"methods": {}}
    if "reference_source" in record:
        out["references"] = describe_references(record["reference_source"], meta)
    return out
