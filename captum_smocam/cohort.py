"""Whole cohorts: SMOCAM maps, region tables and predictions for every scan of a study.

``smocam cohort`` (and :func:`run_cohort`, its Python form) runs the
multi-target fast path of :func:`captum_smocam.pipeline.explain` on every
scan and writes, per scan, one folder ``<out>/<subject>/``::

    <subject>_smocam_<target>.nii.gz   one map per target, on the scan's own grid
    <subject>_regions.csv              per-region attention per target (needs --labels)
    <subject>_predictions.csv          the model's prediction of every output (cm3)
    <subject>_done.json                done-marker, written last (settings, timings, versions)

and, for the whole cohort (rank 0, at the end)::

    manifest.json            per scan: status done / failed / skipped, timings, error
    cohort_regions.csv       per target and region: mean and sd across scans
    cohort_predictions.csv   one row per scan, one column per output
    cohort_summary.png       cohort mean share of attention for the first targets

Resumption: a scan is *complete* when its done-marker exists, was written with
the same settings (model file hash, layer, targets, SMOCAM's objective and its
effective settings, LUT content hash), from the same input files (the marker
records path, size, mtime and SHA-256 of the scan and of its label map; the
content hash decides)
and every file it lists exists; complete scans are skipped on a rerun, and a
scan or label map replaced under the same name is recomputed. A scan's
files are written in a private staging folder and published as one output set
(:class:`captum_smocam._outputs.OutputSet`): the old set is moved aside, the new
files moved in and the done-marker moved in last, under a journal, so a failed
move puts the old set back and a run killed at any point leaves each scan
either with its old complete set or its new one (the next run finishes or
undoes the publication and removes stale staging folders). A scan that fails
(unreadable file, wrong space, ...) is reported on stderr and in the
manifest, and the run goes on.

Concurrent runs: a scan is explained with its lock held (``flock`` on
``<out>/.smocam-locks/<subject>_done.json.lock``). A run skips the scans
another run holds, does the rest, then waits for the skipped ones and takes
over only those that are still not complete, so two runs on one ``--out`` (or
several ``torchrun`` jobs of one study) share the work. Temporary files are
per run (staging folders, ``.manifest.<job>.rank-<r>.json``) and removed only
with the owning set's lock held, so one run never deletes another's.

Scale-out: under ``torchrun`` (environment ``RANK`` / ``WORLD_SIZE``) each
rank joins a ``torch.distributed`` process group (``nccl`` with CUDA, else
``gloo``), runs on ``cuda:LOCAL_RANK`` when CUDA is available, and takes the
scans ``i`` with ``i % WORLD_SIZE == RANK`` of the sorted list. After a
barrier, rank 0 reads every scan's CSVs and writes the cohort tables, so all
ranks must see the same ``--out`` folder (a shared file system across nodes).
"""
from __future__ import annotations

import datetime
import glob
import hashlib
import importlib.resources
import json
import os
import platform
import re
import sys
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch

from . import __version__
from ._io import child_path, nifti_stem, save_figure, write_csv, write_json
from ._outputs import OutputSet, prepare_out
from .nifti import PREPROCESSING_VERSION, DataWarning, load_label_map, load_scan, map_to_grid, save_map
from .pipeline import (  # noqa: F401  (load_model: importable from here as before)
    DEFAULT_MODEL, check_finite_outputs, explain, load_model, resolve_device, resolve_layer, resolve_model, resolve_targets,
    smocam_settings,
)
from .regions import aggregate_region_tables, get_region_table, read_lut

__all__ = [
    "run_cohort",
    "find_scans",
    "subject_id",
    "match_labels",
    "PAIRINGS",
    "DistContext",
    "dist_context",
    "DEFAULT_OUT",
    "SUMMARY_TARGETS",
]

#: Output folder used when ``--out`` is not given.
DEFAULT_OUT = "smocam-cohort"
#: The summary figure shows the cohort means of at most this many targets.
SUMMARY_TARGETS = 4
#: Regions per panel of the summary figure.
SUMMARY_TOP = 10
#: Significant digits of the numbers in the CSV files.
CSV_FLOAT_FORMAT = "%.8g"
#: Process-group timeout: ranks wait this long for each other at the final barrier.
DIST_TIMEOUT = datetime.timedelta(hours=24)

_BIDS_SUB = re.compile(r"(?:^|_)(sub-[A-Za-z0-9]+)")
_BIDS_SES = re.compile(r"(?:^|_)(ses-[A-Za-z0-9]+)")
_LIST_SUFFIXES = (".txt", ".lst")


# --------------------------------------------------------------------------
# Inputs: scans, subject ids, label maps
# --------------------------------------------------------------------------


def find_scans(images: Union[str, Sequence[str]]) -> List[Path]:
    """Expand globs, list files and paths into the sorted, de-duplicated scan list.

    Each item is a glob pattern (``*``, ``?``, ``[``; ``**`` recurses), a text
    file (``.txt`` / ``.lst``) with one path per line (blank lines and ``#``
    comments ignored; relative paths are relative to the list file), or a path.
    Paths are not checked here: a missing scan fails on its own and is reported.

    Args:
        images (str or sequence of str): the items.

    Returns:
        list of pathlib.Path: sorted by their string form, duplicates removed.

    Raises:
        ValueError: no item given, or a glob matches nothing.

    Examples::

        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> for s in ("sub-02", "sub-01"):
        ...     _ = open(os.path.join(d, s + "_T1w.nii.gz"), "w")
        >>> [p.name for p in find_scans(os.path.join(d, "*_T1w.nii.gz"))]
        ['sub-01_T1w.nii.gz', 'sub-02_T1w.nii.gz']
    """
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    items = [os.fspath(i) for i in images]
    if not items:
        raise ValueError("no images given; expected a glob such as 'data/sub-*_T1w.nii.gz', a list file or paths")
    found = set()
    for item in items:
        if glob.has_magic(item):
            matches = glob.glob(item, recursive=True)
            if not matches:
                raise ValueError(f"no file matches the pattern {item!r}")
            found.update(matches)
        elif item.lower().endswith(_LIST_SUFFIXES) and os.path.isfile(item):
            base = os.path.dirname(os.path.abspath(item))
            with open(item, encoding="utf-8") as fh:
                for line in fh:
                    line = line.split("#", 1)[0].strip()
                    if line:
                        found.add(line if os.path.isabs(line) else os.path.join(base, line))
        else:
            found.add(item)
    return [Path(p) for p in sorted(found, key=lambda p: os.path.normpath(p))]


def subject_id(path: Union[str, os.PathLike]) -> str:
    """The id naming a scan's outputs: its BIDS ``sub-<label>[_ses-<label>]``, else the file stem.

    The stem is the file name without ``.nii`` / ``.nii.gz``, made safe by
    :func:`captum_smocam._io.safe_name`: characters other than letters,
    digits and ``._+-`` and leading dots are replaced, and a short hash of the
    original stem is appended when anything changed, so an id is always one
    plain folder name (never ``.`` or ``..``) and different stems keep
    different ids.

    Examples::

        >>> subject_id("data/sub-0003_ses-01_T1w.nii.gz")
        'sub-0003_ses-01'
        >>> subject_id("/scans/patient7.nii")
        'patient7'
        >>> subject_id("/scans/..nii.gz")
        'scan-3a52ce78'
    """
    name = Path(path).name
    sub = _BIDS_SUB.search(name)
    if sub:
        ses = _BIDS_SES.search(name)
        return sub.group(1) + (f"_{ses.group(1)}" if ses else "")
    return nifti_stem(name)


#: How :func:`match_labels` pairs label maps with scans.
PAIRINGS = ("id", "sorted")


def match_labels(scans: Sequence[Path], labels: Union[str, Sequence[str]], pairing: str = "id") -> Dict[Path, Path]:
    """Pair scans with their label maps: by subject id, or, only when asked, by sorted order.

    ``pairing="id"`` (the default): a scan is paired with the one label file
    whose :func:`subject_id` is its own (``sub-0003_T1w.nii.gz`` <->
    ``sub-0003_labels.nii.gz``). A scan that no label file names gets no
    label map (no region table; a notice names it) as long as every label file
    was used; if some label file matches no scan while a scan has none, or a
    scan's id names several label files, the pairing is ambiguous and refused.
    ``pairing="sorted"``: the i-th scan with the i-th label file, both in
    sorted order, which needs as many label files as scans (a notice is
    printed).

    Args:
        scans (sequence of Path): from :func:`find_scans`.
        labels (str or sequence of str): globs / list files / paths of the label
            maps (expanded with :func:`find_scans`).
        pairing (str, optional): ``"id"`` or ``"sorted"``. Default: ``"id"``

    Returns:
        dict: scan path -> label path, for the scans that have a label map.

    Raises:
        ValueError: an ambiguous pairing by id, or sorted pairing with unequal counts.

    Examples::

        >>> from pathlib import Path
        >>> match_labels([Path("sub-1_T1w.nii.gz")], ["x/sub-1_labels.nii.gz"])
        {PosixPath('sub-1_T1w.nii.gz'): PosixPath('x/sub-1_labels.nii.gz')}
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
    label_paths = find_scans(labels)
    if pairing == "sorted":
        if len(label_paths) != len(scans):
            raise ValueError(f"cannot pair by sorted order: {len(scans)} scans but {len(label_paths)} label maps")
        print(f"smocam cohort: label maps paired with scans by sorted order, as asked "
              f"(first pair: {scans[0].name} <- {label_paths[0].name})", file=sys.stderr)
        return dict(zip(scans, label_paths))
    by_id: Dict[str, List[Path]] = {}
    for p in label_paths:
        by_id.setdefault(subject_id(p), []).append(p)
    several = [(subject_id(s), by_id[subject_id(s)]) for s in scans if len(by_id.get(subject_id(s), [])) > 1]
    if several:
        sid, paths = several[0]
        raise ValueError(f"{len(paths)} label maps have the id {sid!r} ({', '.join(str(p) for p in paths[:3])}); "
                         f"keep one per scan")
    pairs = {s: by_id[subject_id(s)][0] for s in scans if subject_id(s) in by_id}
    without = [s for s in scans if s not in pairs]
    unused = [p for p in label_paths if subject_id(p) not in {subject_id(s) for s in scans}]
    if without and unused:
        raise ValueError(
            f"cannot pair label maps with scans by subject id: {len(without)} scan(s) have no label map with their "
            f"id ({', '.join(subject_id(s) for s in without[:3])}) and {len(unused)} label map(s) match no scan "
            f"({', '.join(p.name for p in unused[:3])}); name the label maps after the scans' ids "
            f"(e.g. {subject_id(without[0])}_labels.nii.gz), or pass --pair-labels sorted "
            f"(pairing='sorted') to pair all by sorted order"
        )
    if without:
        print(f"smocam cohort: {len(without)} scan(s) have no label map with their id and get no region table: "
              f"{', '.join(subject_id(s) for s in without[:10])}{' ...' if len(without) > 10 else ''}",
              file=sys.stderr)
    return pairs


# --------------------------------------------------------------------------
# torch.distributed
# --------------------------------------------------------------------------


@dataclass
class DistContext:
    """Where this process stands in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            if dist.get_backend() == "nccl":
                dist.barrier(device_ids=[self.device.index or 0])
            else:
                dist.barrier()

    def close(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialized = False


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value != "" else default
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def dist_context(device: str = "auto") -> DistContext:
    """Join the ``torchrun`` process group if there is one, pick the device, set the threads.

    Detects ``torchrun`` from ``RANK`` / ``WORLD_SIZE`` in the environment. With
    ``WORLD_SIZE > 1`` it calls ``torch.distributed.init_process_group`` with
    ``nccl`` when CUDA is used, else ``gloo``. The device is
    ``cuda:LOCAL_RANK`` when CUDA is available (``device="auto"``), else CPU.
    Torch CPU threads are set to ``max(1, cpus // LOCAL_WORLD_SIZE)``.

    Args:
        device (str, optional): ``"auto"``, ``"cpu"`` or ``"cuda"``. Default: ``"auto"``

    Returns:
        DistContext: rank, world size, device, whether a group was initialised.
    """
    rank = _env_int("RANK", 0)
    world = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    dev = resolve_device(device, local_rank)
    use_cuda = dev.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(dev)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    torch.set_num_threads(max(1, cpus // max(local_world, 1)))
    ctx = DistContext(rank, world, local_rank, local_world, dev, False)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_available():
            raise ValueError(f"WORLD_SIZE={world} but this torch build has no torch.distributed")
        if not dist.is_initialized():
            backend = "nccl" if use_cuda else "gloo"
            kwargs = {"device_id": dev} if use_cuda else {}
            dist.init_process_group(backend=backend, timeout=DIST_TIMEOUT, **kwargs)
        ctx.initialized = True
    return ctx


# --------------------------------------------------------------------------
# Per scan
# --------------------------------------------------------------------------


def _write_csv(path: Path, table: pd.DataFrame) -> None:
    write_csv(table, path, float_format=CSV_FLOAT_FORMAT)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(name)).strip("-") or "target"


def _file_sha256(path: Union[str, os.PathLike]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _versions() -> Dict[str, str]:
    import captum

    return {
        "captum_smocam": __version__,
        "torch": torch.__version__,
        "captum": getattr(captum, "__version__", "unknown"),
        "python": platform.python_version(),
    }


def _output_names(sid: str, target_names: Sequence[str], with_labels: bool) -> Dict[str, str]:
    """File names of a scan's outputs (in ``<out>/<sid>/``), by role."""
    files = {f"map:{t}": f"{sid}_smocam_{_safe(t)}.nii.gz" for t in target_names}
    if with_labels:
        files["regions"] = f"{sid}_regions.csv"
    files["predictions"] = f"{sid}_predictions.csv"
    return files


def _scan_set(out: Path, sid: str) -> OutputSet:
    """The output set of one scan: the folder ``<out>/<sid>/``, its done-marker as manifest."""
    return OutputSet(out, child_path(out, sid), f"{sid}_done.json")


def _fingerprint(path: Path, what: str) -> Dict[str, Any]:
    """What the done-marker records of an input file: path, size, mtime and content hash (SHA-256)."""
    try:
        st = os.stat(path)
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest.hexdigest()}


def _same_inputs(recorded: Optional[dict], current: dict) -> bool:
    """Whether the scan and label map are the ones the marker was computed from (by content)."""
    if not isinstance(recorded, dict):
        return False
    for key in ("scan", "labels"):
        old, new = recorded.get(key), current.get(key)
        if (old is None) != (new is None) or (new is not None and old.get("sha256") != new["sha256"]):
            return False
    return True


def _is_complete(oset: OutputSet, settings: dict, inputs: dict) -> Optional[dict]:
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


def _region_tables(maps: np.ndarray, info, label_map, target_names: Sequence[str], names) -> pd.DataFrame:
    """One long table: the region table of every target's map on the label map's grid."""
    labels, affine = label_map
    rows = []
    for k, t in enumerate(target_names):
        # Map (model grid) -> label grid in world coordinates, as save_map does for the scan grid.
        on_labels = map_to_grid(maps[k], info, affine, labels.shape)
        table = get_region_table(on_labels, labels, names)
        table.insert(0, "target", t)
        rows.append(table)
    return pd.concat(rows, ignore_index=True)


def _process_scan(
    scan: Path,
    sid: str,
    label_path: Optional[Path],
    *,
    model,
    metadata: dict,
    layer_module,
    targets: List[int],
    target_names: List[str],
    lut: Optional[Dict[int, str]],
    stage: Path,
    smocam_kwargs: dict,
    internal_batch_size: Optional[int],
    device: torch.device,
) -> Dict[str, float]:
    """Explain one scan and write its files into ``stage``; returns timings in seconds. Raises on any failure."""
    files = {k: child_path(stage, v) for k, v in _output_names(sid, target_names, label_path is not None).items()}
    timings = {}

    t = time.perf_counter()
    x, info = load_scan(scan, metadata)
    label_img = load_label_map(label_path, info) if label_path is not None else None
    x = x.to(device)
    timings["load_s"] = time.perf_counter() - t

    t = time.perf_counter()
    with torch.no_grad():
        y = model(x)
    check_finite_outputs(y, metadata["output_names"], where=f"{sid} ({scan.name})")
    pred = y[0].detach().cpu().numpy().astype(np.float64)
    maps = explain(model, metadata, x, targets, layer=layer_module, smocam_kwargs=smocam_kwargs,
                   internal_batch_size=internal_batch_size)
    maps = maps.detach().cpu().numpy()[:, 0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timings["explain_s"] = time.perf_counter() - t

    t = time.perf_counter()
    for k, name in enumerate(target_names):
        save_map(maps[k], info, files[f"map:{name}"])
    if label_img is not None:
        table = _region_tables(maps, info, label_img, target_names, lut)
        table.insert(0, "subject", sid)
        _write_csv(files["regions"], table)
    names = list(metadata["output_names"])
    preds = pd.DataFrame({
        "subject": sid,
        "output": names,
        "index": np.arange(len(names)),
        "prediction": pred,
        "unit": metadata.get("output_units", ""),
        "explained": [i in targets for i in range(len(names))],
    })
    _write_csv(files["predictions"], preds)
    timings["write_s"] = time.perf_counter() - t
    return timings


# --------------------------------------------------------------------------
# Whole cohort
# --------------------------------------------------------------------------


def _rank_manifest(out: Path, job: str, rank: int) -> Path:
    """Where a rank keeps its records while running: per job, so that concurrent runs never share one."""
    return child_path(out, f".manifest.{job}.rank-{rank}.json")


def _clean_old_rank_manifests(out: Path) -> None:
    """Remove the per-rank record files of killed runs: no live run leaves its own untouched this long."""
    limit = time.time() - DIST_TIMEOUT.total_seconds() - 3600
    for p in out.glob(".manifest.*.rank-*.json"):
        try:
            if p.stat().st_mtime < limit:
                p.unlink()
        except OSError:
            pass


def _read_scan_csv(out: Path, sid: str, role: str) -> Optional[pd.DataFrame]:
    """A complete scan's CSV, read under the scan's lock (a concurrent run may be replacing the set)."""
    with _scan_set(out, sid) as oset:
        marker = oset.read_manifest()
        name = f"{sid}_{role}.csv"
        if not marker or name not in marker.get("files", []):
            return None
        return pd.read_csv(child_path(oset.folder, name))


def _merge_cohort(out: Path, records: List[dict], target_names: List[str], with_labels: bool,
                  show_progress: bool) -> Dict[str, Path]:
    """Rank 0: cohort tables and figure from the per-scan CSVs of complete scans."""
    ok = [r["subject"] for r in records if r["status"] in ("done", "skipped")]
    written: Dict[str, Path] = {}
    if not ok:
        return written
    tables = [_read_scan_csv(out, s, "predictions") for s in ok]
    ok = [s for s, t in zip(ok, tables) if t is not None]
    if not ok:
        return written
    preds = pd.concat([t for t in tables if t is not None], ignore_index=True)
    wide = preds.pivot(index="subject", columns="output", values="prediction")
    order = list(dict.fromkeys(preds["output"]))
    wide = wide.loc[ok, order].reset_index()
    written["cohort_predictions"] = out / "cohort_predictions.csv"
    _write_csv(written["cohort_predictions"], wide)
    if not with_labels:
        return written
    region_tables = [t for t in (_read_scan_csv(out, s, "regions") for s in ok) if t is not None]
    if not region_tables:
        return written
    regions = pd.concat(region_tables, ignore_index=True)
    per_target = []
    for t in target_names:
        rows = regions[regions["target"] == t]
        tables = [g for _, g in rows.groupby("subject", sort=False)]
        agg = aggregate_region_tables(tables, by="name", columns=("share", "attention_mean"))
        agg.insert(0, "target", t)
        per_target.append(agg)
    cohort = pd.concat(per_target, ignore_index=True)
    written["cohort_regions"] = out / "cohort_regions.csv"
    _write_csv(written["cohort_regions"], cohort)
    written["cohort_summary"] = _summary_figure(out / "cohort_summary.png", cohort, target_names, len(ok))
    return written


def _summary_figure(path: Path, cohort: pd.DataFrame, target_names: List[str], n_scans: int) -> Path:
    from matplotlib.figure import Figure

    from .plotting import plot_region_attention

    shown = target_names[:SUMMARY_TARGETS]
    fig = Figure(figsize=(4.2 * len(shown), 0.9 + 0.3 * SUMMARY_TOP), layout="constrained")
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    for ax, t in zip(axes, shown):
        plot_region_attention(cohort[cohort["target"] == t], column="share_mean", top=SUMMARY_TOP,
                              title=f"{t} (n={n_scans})", ax=ax)
    return save_figure(fig, path, dpi=100)


def _job_id(ctx: DistContext) -> str:
    """An id shared by the ranks of this run and by no other run (names the per-rank record files)."""
    job = [uuid.uuid4().hex[:12]]
    if ctx.initialized:
        import torch.distributed as dist

        dist.broadcast_object_list(job, src=0)
    return str(job[0])


def _run_one(i: int, scan: Path, sid: str, label_path: Optional[Path], oset: OutputSet, *, redo: bool,
             waited: bool, settings: dict, run_info: dict, bar, labels_given: bool, **process_kwargs) -> dict:
    """One scan, with its lock held: skip it if complete, else explain it and publish its output set."""
    record = {"subject": sid, "scan": str(scan), "labels": str(label_path) if label_path else None,
              "index": i, **run_info}
    if labels_given and label_path is None:
        record["note"] = "no label map with this subject id: no region table"
    oset.recover()  # finish or undo a publication a killed run left half done; drop stale temporary folders
    _clean_partial(oset.folder)
    t0 = time.perf_counter()
    stage = None
    try:
        inputs = {"scan": _fingerprint(scan, "scan file"),
                  "labels": _fingerprint(label_path, "label map") if label_path is not None else None}
        marker = None if redo else _is_complete(oset, settings, inputs)
        if marker is not None:
            reason = "complete (after waiting for another run)" if waited else "complete from an earlier run"
            record.update(status="skipped", reason=reason, timings=marker.get("timings"),
                          finished=marker.get("finished"))
            return record
        stage = oset.new_stage()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DataWarning)
            timings = _process_scan(scan, sid, label_path, stage=stage, **process_kwargs)
        for w in caught:
            if issubclass(w.category, DataWarning):
                record.setdefault("warnings", []).append(str(w.message))
                bar.write(f"smocam cohort: {sid}: warning: {w.message}", file=sys.stderr)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        timings["total_s"] = time.perf_counter() - t0
        record.update(status="done", timings=timings,
                      finished=datetime.datetime.now().isoformat(timespec="seconds"))
        oset.commit(stage, {**record, "inputs": inputs, "settings": settings, "versions": _versions()},
                    merge=False, overwrite=True)
    except Exception as exc:  # one bad scan never stops the cohort
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        record.update(status="failed", error=f"{type(exc).__name__}: {msg}",
                      timings={"total_s": time.perf_counter() - t0})
        record.pop("finished", None)
        bar.write(f"smocam cohort: {sid} ({scan}) failed and was skipped: {record['error']}", file=sys.stderr)
    finally:
        if stage is not None:
            oset.discard(stage)
    return record


def run_cohort(
    images: Union[str, Sequence[str]],
    model: Optional[str] = None,
    targets: Union[str, Sequence[Union[str, int]]] = "all",
    *,
    labels: Optional[Union[str, Sequence[str]]] = None,
    lut: Optional[Union[str, os.PathLike]] = None,
    out: Union[str, os.PathLike] = DEFAULT_OUT,
    layer: Optional[str] = None,
    objective: Optional[str] = None,
    n_steps: Optional[int] = None,
    internal_batch_size: Optional[int] = None,
    device: str = "auto",
    force: bool = False,
    show_progress: bool = True,
    pair_labels: str = "id",
) -> dict:
    """SMOCAM maps, region tables and predictions for every scan of a cohort; resumable, shardable.

    Per scan, all ``targets`` are explained in one SMOCAM batch
    (:func:`captum_smocam.pipeline.explain`, the network before ``layer`` runs
    once) and the files listed in the module docstring are written
    as one output set, the done-marker last. Complete scans (see the module
    docstring: same settings, same scan and label-map content) are skipped
    unless ``force``. A scan that raises is recorded as
    failed and the run continues. Under ``torchrun`` every rank calls this
    function with the same arguments; rank ``r`` of ``W`` explains the scans
    ``r, r + W, ...`` of the sorted list, and rank 0 writes ``manifest.json``
    and the cohort tables after a barrier.

    Args:
        images (str or sequence of str): globs, list files (``.txt``) or paths
            of T1 scans registered to the model's space (see :func:`find_scans`).
        model (str, optional): checkpoint path or shipped name. Default: ``"vgg"``
        targets (str or sequence, optional): ``"all"``, names or indices
            (:func:`captum_smocam.pipeline.resolve_targets`). Default: ``"all"``
        labels (str or sequence of str, optional): label maps, paired with the
            scans by :func:`match_labels`; a scan without one gets no region
            table. Default: None
        lut (str or Path, optional): ``FreeSurferColorLUT.txt``-format names of
            the labels; if None and a ``labels.txt`` lies beside the first label
            map, that is used. Default: None
        out (str or Path, optional): output folder. Default: ``"smocam-cohort"``
        layer (str, optional): layer name; default the checkpoint's. Default: None
        objective (str, optional): SMOCAM's objective, ``"preserve"`` or ``"poster"``.
            Default: :data:`captum_smocam.smocam.DEFAULT_OBJECTIVE`
        n_steps (int, optional): SMOCAM optimisation steps. Default: the objective's
            (``captum_smocam.smocam.OBJECTIVE_DEFAULTS``)
        internal_batch_size (int, optional): at most this many masks optimised
            at once (memory bound; results do not depend on it). Default: None
        device (str, optional): ``"auto"`` (``cuda:LOCAL_RANK`` if available),
            ``"cpu"`` or ``"cuda"``. Default: ``"auto"``
        force (bool, optional): redo complete scans too. Default: False
        show_progress (bool, optional): tqdm bar over this rank's scans. Default: True
        pair_labels (str, optional): ``"id"`` or ``"sorted"``, see
            :func:`match_labels`. Default: ``"id"``

    Returns:
        dict: ``"records"`` (per-scan dicts as in the manifest; on rank 0 all
        scans, on other ranks their own), ``"n_done"``, ``"n_skipped"``,
        ``"n_failed"``, ``"files"`` (cohort files written, rank 0), ``"out"`` and
        ``"rank"`` (this process's rank).

    Examples::

        >>> res = run_cohort("data/sub-*_T1w.nii.gz", "vgg", "left_hippocampus,right_hippocampus",
        ...                  labels="data/sub-*_labels.nii.gz", out="results")  # doctest: +SKIP
        >>> res["n_failed"], sorted(res["files"])  # doctest: +SKIP
        (0, ['cohort_predictions', 'cohort_regions', 'cohort_summary'])
    """
    from tqdm.auto import tqdm

    smocam_kwargs, effective = smocam_settings(objective, n_steps=n_steps)
    if internal_batch_size is not None and (not isinstance(internal_batch_size, (int, np.integer))
                                            or internal_batch_size < 1):
        raise ValueError(f"internal_batch_size must be a positive int or None, got {internal_batch_size!r}")
    out = Path(out)
    scans = find_scans(images)
    sids = [subject_id(s) for s in scans]
    dup = sorted({s for s in sids if sids.count(s) > 1})
    if dup:
        raise ValueError(f"several scans share the subject id {dup[0]!r}; output folders would collide "
                         f"(rename them or run the cohorts into different --out folders)")
    label_map = match_labels(scans, labels, pair_labels) if labels else {}
    if lut is None and label_map:
        beside = next(iter(label_map.values())).parent / "labels.txt"
        lut = beside if beside.is_file() else None
    lut_names = read_lut(lut) if lut is not None else None

    net, metadata, model_file = resolve_model(model)
    layer_name, layer_module = resolve_layer(net, metadata, layer)
    target_idx = resolve_targets(metadata, targets)
    target_names = [str(metadata["output_names"][i]) for i in target_idx]
    file_names = [_safe(t) for t in target_names]
    clash = sorted({f for f in file_names if file_names.count(f) > 1})
    if clash:
        raise ValueError(f"targets {[t for t in target_names if _safe(t) == clash[0]]} would share the map file "
                         f"name *_smocam_{clash[0]}.nii.gz; explain them in separate runs")
    settings = {
        "method": "smocam",
        "model": str(model or DEFAULT_MODEL),
        "model_sha256": _file_sha256(model_file),
        "layer": layer_name,
        "targets": target_names,
        **effective,
        "lut_sha256": _file_sha256(lut) if lut is not None else None,
        "preprocessing_version": PREPROCESSING_VERSION,
    }

    prepare_out(out)  # an unusable --out fails now, not after the first scan
    ctx = dist_context(device)
    try:
        net = net.to(ctx.device).eval()
        mine = list(range(ctx.rank, len(scans), ctx.world_size))
        run_info = {"rank": ctx.rank, "world_size": ctx.world_size, "device": str(ctx.device),
                    "torch_threads": torch.get_num_threads(), "internal_batch_size": internal_batch_size}
        job = _job_id(ctx)
        records: List[dict] = []
        write_json(records, _rank_manifest(out, job, ctx.rank))
        desc = "cohort" if ctx.world_size == 1 else f"cohort rank {ctx.rank}/{ctx.world_size}"
        bar = tqdm(total=len(mine), desc=desc, unit="scan", disable=not show_progress, file=sys.stderr)
        # First pass: the scans no other run is working on. Second pass: wait for the others' scans, then
        # take them over only if they are still not complete (the other run failed or used other settings).
        busy: List[int] = []
        for blocking, queue in ((False, mine), (True, busy)):
            for i in queue:
                oset = _scan_set(out, sids[i])
                if not oset.acquire(blocking=blocking):
                    busy.append(i)
                    continue
                try:
                    record = _run_one(i, scans[i], sids[i], label_map.get(scans[i]), oset,
                                      redo=force and not blocking, waited=blocking, settings=settings,
                                      labels_given=bool(label_map),
                                      run_info=run_info, bar=bar, model=net, metadata=metadata,
                                      layer_module=layer_module, targets=target_idx, target_names=target_names,
                                      lut=lut_names, smocam_kwargs=smocam_kwargs,
                                      internal_batch_size=internal_batch_size, device=ctx.device)
                finally:
                    oset.release()
                records.append(record)
                write_json(records, _rank_manifest(out, job, ctx.rank))
                bar.update(1)
        bar.close()

        ctx.barrier()
        result = {"out": out, "files": {}}
        if ctx.is_main:
            merged: List[dict] = []
            for r in range(ctx.world_size):
                with open(_rank_manifest(out, job, r), encoding="utf-8") as fh:
                    merged.extend(json.load(fh))
            merged.sort(key=lambda rec: rec["index"])
            records = merged
            result["files"] = _merge_cohort(out, records, target_names, bool(label_map), show_progress)
            counts = {s: sum(r["status"] == s for r in records) for s in ("done", "skipped", "failed")}
            write_json({
                "created": datetime.datetime.now().isoformat(timespec="seconds"),
                "versions": _versions(),
                "settings": settings,
                "lut": str(lut) if lut is not None else None,
                "world_size": ctx.world_size,
                "n_scans": len(records),
                **{f"n_{k}": v for k, v in counts.items()},
                "cohort_files": {k: p.name for k, p in result["files"].items()},
                "scans": records,
            }, out / "manifest.json")
            for r in range(ctx.world_size):
                _rank_manifest(out, job, r).unlink(missing_ok=True)
            _clean_old_rank_manifests(out)
        ctx.barrier()
    finally:
        ctx.close()
    result["records"] = records
    result["rank"] = ctx.rank
    for s in ("done", "skipped", "failed"):
        result[f"n_{s}"] = sum(r["status"] == s for r in records)
    return result
