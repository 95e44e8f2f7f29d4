"""One scan of a cohort: its files, whether they are complete, and explaining it into a new output set.

A scan ``<sid>`` has one folder ``<out>/<sid>/`` (:func:`scan_set`) whose files
are named by :func:`scan_output_names`; :func:`run_scan`, with the scan's lock
held, skips it when its done-marker says it is complete for these settings and
these input files (by content, :func:`input_fingerprint`), else explains it
(:func:`process_scan`) into a staging folder and publishes the set, the
done-marker last. :mod:`captum_smocam.cohort` runs this for every scan of a
study; :mod:`captum_smocam.report` reads the files back by the same names.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import platform
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch

from . import __version__
from ._io import child_path, write_csv
from ._outputs import OutputSet
from ._text import shorten_message
from .nifti import DataWarning, load_label_map, load_scan, save_map
from .pipeline import check_finite_outputs, explain
from .regions import get_region_table

__all__ = ["CSV_FLOAT_FORMAT", "ScanRun", "ScanItem", "target_file_name", "scan_output_names", "scan_set",
           "file_sha256", "versions", "input_fingerprint", "complete_marker", "region_tables", "process_scan",
           "run_scan", "write_scan_csv"]

#: Significant digits of the numbers in the CSV files.
CSV_FLOAT_FORMAT = "%.8g"


@dataclass(frozen=True)
class ScanRun:
    """What every scan of one run is explained with, and what its done-marker must record.

    ``model`` (on ``device``), its ``metadata``, ``layer_module``, the explained
    outputs (``targets`` indices, ``target_names``), the label names ``lut``,
    SMOCAM's given settings (``smocam_kwargs``) and ``internal_batch_size``;
    ``settings`` is what a done-marker must match for its scan to be complete,
    ``run_info`` what each scan's record says of the process (rank, device,
    threads), and ``labels_given`` whether the run was given label maps.
    """

    model: torch.nn.Module
    metadata: Dict[str, Any]
    layer_module: torch.nn.Module
    targets: List[int]
    target_names: List[str]
    lut: Optional[Dict[int, str]]
    smocam_kwargs: Dict[str, Any]
    internal_batch_size: Optional[int]
    device: torch.device
    settings: Dict[str, Any]
    run_info: Dict[str, Any]
    labels_given: bool


@dataclass(frozen=True)
class ScanItem:
    """One scan of the study: its position in the sorted list, its file, subject id and label map (or None)."""

    index: int
    scan: Path
    sid: str
    label_path: Optional[Path] = None


def target_file_name(name: str) -> str:
    """A target's name as it stands in its map's file name.

    Examples::

        >>> target_file_name("Left-Lateral Ventricle (cm3)")
        'Left-Lateral-Ventricle-cm3'
    """
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(name)).strip("-") or "target"


def scan_output_names(sid: str, target_names: Sequence[str], with_labels: bool) -> Dict[str, str]:
    """File names of a scan's outputs (in ``<out>/<sid>/``), by role: ``"map:<target>"``, ``"regions"`` (with
    label maps) and ``"predictions"``.

    Examples::

        >>> scan_output_names("sub-01", ["left hippocampus"], with_labels=False)
        {'map:left hippocampus': 'sub-01_smocam_left-hippocampus.nii.gz', 'predictions': 'sub-01_predictions.csv'}
    """
    files = {f"map:{t}": f"{sid}_smocam_{target_file_name(t)}.nii.gz" for t in target_names}
    if with_labels:
        files["regions"] = f"{sid}_regions.csv"
    files["predictions"] = f"{sid}_predictions.csv"
    return files


def scan_set(out: Path, sid: str) -> OutputSet:
    """The output set of one scan: the folder ``<out>/<sid>/``, its done-marker as manifest."""
    return OutputSet(out, child_path(out, sid), f"{sid}_done.json")


def write_scan_csv(path: Path, table: pd.DataFrame) -> None:
    """A cohort CSV file, numbers to :data:`CSV_FLOAT_FORMAT`."""
    write_csv(table, path, float_format=CSV_FLOAT_FORMAT)


def _sha256(path: Union[str, os.PathLike]) -> str:
    """SHA-256 of a file's content (hex), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Union[str, os.PathLike]) -> str:
    """The first 16 hex digits of a file's SHA-256 (model files and LUTs in the settings)."""
    return _sha256(path)[:16]


def versions() -> Dict[str, str]:
    """The versions a done-marker and the manifest record: captum_smocam, torch, captum, python."""
    import captum

    return {
        "captum_smocam": __version__,
        "torch": torch.__version__,
        "captum": getattr(captum, "__version__", "unknown"),
        "python": platform.python_version(),
    }


def input_fingerprint(path: Path, what: str) -> Dict[str, Any]:
    """What the done-marker records of an input file: path, size, mtime and content hash (SHA-256)."""
    try:
        st = os.stat(path)
        sha256 = _sha256(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}


def _same_inputs(recorded: Optional[dict], current: dict) -> bool:
    """Whether the scan and label map are the ones the marker was computed from (by content)."""
    if not isinstance(recorded, dict):
        return False
    for key in ("scan", "labels"):
        old, new = recorded.get(key), current.get(key)
        if (old is None) != (new is None) or (new is not None and old.get("sha256") != new["sha256"]):
            return False
    return True


def complete_marker(oset: OutputSet, settings: dict, inputs: dict) -> Optional[dict]:
    """The done-marker if the scan is complete for these settings and these input files, else None."""
    marker = oset.read_manifest()
    if not marker or marker.get("status") != "done" or marker.get("settings") != settings:
        return None
    if not _same_inputs(marker.get("inputs"), inputs):
        return None
    if not all(child_path(oset.folder, name).is_file() for name in marker.get("files", [])):
        return None
    return marker


def _clean_partial(folder: Path) -> None:
    """Remove temporary files an older version's killed run left behind (``.<name>.<random>.part<suffix>``).

    Only called with the scan's lock held: nothing else writes in the scan's folder then.
    """
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(".") and ".part" in p.name and p.is_file():
                p.unlink(missing_ok=True)


def region_tables(maps: np.ndarray, info, label_map, target_names: Sequence[str], names) -> pd.DataFrame:
    """One long table: the region table of every target's map on the label map's grid."""
    labels, affine = label_map
    rows = []
    for k, t in enumerate(target_names):
        # Map (model grid) -> label grid in world coordinates, as save_map does for the scan grid.
        table = get_region_table(maps[k], labels, names, info=info, labels_affine=affine)
        table.insert(0, "target", t)
        rows.append(table)
    return pd.concat(rows, ignore_index=True)


def process_scan(item: ScanItem, run: ScanRun, stage: Path, used: Optional[dict] = None) -> Dict[str, float]:
    """Explain one scan and write its files into ``stage``; returns timings in seconds. Raises on any failure.

    ``used`` (a dict) gets ``"references"``: which references SMOCAM used
    (:func:`captum_smocam.references.describe_references`).
    """
    scan, sid, label_path, metadata = item.scan, item.sid, item.label_path, run.metadata
    files = {k: child_path(stage, v)
             for k, v in scan_output_names(sid, run.target_names, label_path is not None).items()}
    timings = {}

    t = time.perf_counter()
    x, info = load_scan(scan, metadata)
    label_img = load_label_map(label_path, info) if label_path is not None else None
    x = x.to(run.device)
    timings["load_s"] = time.perf_counter() - t

    t = time.perf_counter()
    with torch.no_grad():
        y = run.model(x)
    check_finite_outputs(y, metadata["output_names"], where=f"{sid} ({scan.name})")
    pred = y[0].detach().cpu().numpy().astype(np.float64)
    record: dict = {}
    maps = explain(run.model, metadata, x, run.targets, layer=run.layer_module, smocam_kwargs=run.smocam_kwargs,
                   internal_batch_size=run.internal_batch_size, record=record)
    if used is not None:
        from .references import describe_references

        used["references"] = describe_references(record.get("reference_source"), metadata)
    maps = maps.detach().cpu().numpy()[:, 0]
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    timings["explain_s"] = time.perf_counter() - t

    t = time.perf_counter()
    for k, name in enumerate(run.target_names):
        save_map(maps[k], info, files[f"map:{name}"])
    if label_img is not None:
        table = region_tables(maps, info, label_img, run.target_names, run.lut)
        table.insert(0, "subject", sid)
        write_scan_csv(files["regions"], table)
    names = list(metadata["output_names"])
    preds = pd.DataFrame({
        "subject": sid,
        "output": names,
        "index": np.arange(len(names)),
        "prediction": pred,
        "unit": metadata.get("output_units", ""),
        "explained": [i in run.targets for i in range(len(names))],
    })
    write_scan_csv(files["predictions"], preds)
    timings["write_s"] = time.perf_counter() - t
    return timings


def run_scan(item: ScanItem, oset: OutputSet, run: ScanRun, *, redo: bool, waited: bool, bar) -> dict:
    """One scan, with its lock held: skip it if complete, else explain it and publish its output set.

    Returns the scan's record for the manifest (status ``done``, ``skipped`` or
    ``failed``); a failure is recorded and written to ``bar`` (a tqdm bar), never raised.
    """
    scan, label_path = item.scan, item.label_path
    record = {"subject": item.sid, "scan": str(scan), "labels": str(label_path) if label_path else None,
              "index": item.index, **run.run_info}
    if run.labels_given and label_path is None:
        record["note"] = "no label map with this subject id: no region table"
    oset.recover()  # finish or undo a publication a killed run left half done; drop stale temporary folders
    _clean_partial(oset.folder)
    t0 = time.perf_counter()
    stage = None
    try:
        inputs = {"scan": input_fingerprint(scan, "scan file"),
                  "labels": input_fingerprint(label_path, "label map") if label_path is not None else None}
        marker = None if redo else complete_marker(oset, run.settings, inputs)
        if marker is not None:
            reason = "complete (after waiting for another run)" if waited else "complete from an earlier run"
            record.update(status="skipped", reason=reason, timings=marker.get("timings"),
                          finished=marker.get("finished"), references=marker.get("references"))
            return record
        stage = oset.new_stage()
        used: dict = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DataWarning)
            timings = process_scan(item, run, stage, used)
        for w in caught:
            if issubclass(w.category, DataWarning):
                record.setdefault("warnings", []).append(str(w.message))
                bar.write(f"smocam cohort: {item.sid}: warning: {w.message}", file=sys.stderr)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        timings["total_s"] = time.perf_counter() - t0
        record.update(status="done", timings=timings, references=used.get("references"),
                      finished=datetime.datetime.now().isoformat(timespec="seconds"))
        oset.commit(stage, {**record, "inputs": inputs, "settings": run.settings, "versions": versions()},
                    merge=False, overwrite=True)
    except Exception as exc:  # one bad scan never stops the cohort
        msg = shorten_message(str(exc).strip().splitlines()[0], 300) if str(exc).strip() else ""
        record.update(status="failed", error=f"{type(exc).__name__}: {msg}",
                      timings={"total_s": time.perf_counter() - t0})
        record.pop("finished", None)
        bar.write(f"smocam cohort: {item.sid} ({scan}) failed and was skipped: {record['error']}", file=sys.stderr)
    finally:
        if stage is not None:
            oset.discard(stage)
    return record
