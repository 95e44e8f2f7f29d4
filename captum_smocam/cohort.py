"""Whole cohorts: every scan of a study explained, resumably, shared between runs and ranks; then the cohort tables.

``smocam cohort`` (and :func:`run_cohort`, its Python form) runs the
multi-target fast path of :func:`captum_smocam.pipeline.explain` on every
scan and writes, per scan, one folder ``<out>/<subject>/``::

    <subject>_smocam_<target>.nii.gz   one map per target, on the scan's own grid
    <subject>_regions.csv              per-region attention per target (needs --labels)
    <subject>_predictions.csv          the model's prediction of every output (cm3)
    <subject>_done.json                done-marker, written last (settings, timings, versions, references)

and, for the whole cohort (rank 0, at the end)::

    manifest.json            per scan: status done / failed / skipped, timings, error, references used
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
with the owning lock held: a set's with the set's lock, a run's record files
once no process holds the run's lock (``flock`` on
``<out>/.smocam-locks/job-<job>.lock``, shared by its ranks while they run), so
one run never deletes another live run's files, and a killed run's are removed
by the next one.

The work of one scan (its files, whether it is complete, explaining it and
publishing its set) is :mod:`captum_smocam.cohort_scan`; this module finds the
study, shares the scans out, and merges the per-scan tables.

Scale-out: under ``torchrun`` (environment ``RANK`` / ``WORLD_SIZE``) each
rank joins a ``torch.distributed`` process group (``nccl`` with CUDA, else
``gloo``), runs on ``cuda:LOCAL_RANK`` when CUDA is available, and takes the
scans ``i`` with ``i % WORLD_SIZE == RANK`` of the sorted list. After a
barrier, rank 0 reads every scan's CSVs and writes the cohort tables, so all
ranks must see the same ``--out`` folder (a shared file system across nodes).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch

from ._dist import DistContext, dist_context
from ._io import child_path, save_figure, write_json
from ._outputs import LOCK_DIR, FileLock, prepare_out
from .cohort_inputs import PAIRINGS, find_scans, match_labels, subject_id
from .cohort_scan import (
    ScanItem, ScanRun, file_sha256, run_scan, scan_set, target_file_name, versions, write_scan_csv,
)
from .model_card import model_fingerprint
from .nifti import PREPROCESSING_VERSION
from .pipeline import DEFAULT_MODEL, resolve_layer, resolve_model, resolve_targets, smocam_settings
from .regions import aggregate_region_tables, read_lut

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
#: The cohort files rank 0 may write into ``--out`` (:func:`_merge_cohort`).
COHORT_FILES = ("cohort_predictions.csv", "cohort_regions.csv", "cohort_summary.png")
#: A rank's record file: ``.manifest.<job>.rank-<r>.json``.
_RANK_MANIFEST = re.compile(r"^\.manifest\.(?P<job>[^.]+)\.rank-\d+\.json$")


def run_cohort(
    images: Union[str, Sequence[str]],
    model: Union[None, str, "torch.nn.Module"] = None,
    targets: Union[str, Sequence[Union[str, int]]] = "all",
    *,
    metadata: Optional[Union[dict, str, os.PathLike]] = None,
    trust_checkpoint: bool = False,
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
        model (str or torch.nn.Module, optional): checkpoint path (any
            architecture, :func:`captum_smocam.models.save_checkpoint`),
            shipped name, or a network in memory with a description
            (:func:`captum_smocam.describe_model`, or ``metadata``). Default: ``"vgg"``
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
        metadata (dict or str, optional): the description of a ``model`` given
            in memory (a dict, or a JSON file, see
            :mod:`captum_smocam.model_card`). Default: the one it carries
        trust_checkpoint (bool, optional): read checkpoints that could run
            code (see :func:`captum_smocam.models.load_checkpoint`). Default: False

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
    smocam_kwargs, effective = smocam_settings(objective, n_steps=n_steps)
    if internal_batch_size is not None and (not isinstance(internal_batch_size, (int, np.integer))
                                            or internal_batch_size < 1):
        raise ValueError(f"internal_batch_size must be a positive int or None, got {internal_batch_size!r}")
    out = Path(out)
    scans, sids, label_map, lut = _study(images, labels, lut, pair_labels)
    lut_names = read_lut(lut) if lut is not None else None
    net, metadata, model_file = resolve_model(model, metadata=metadata, trust_checkpoint=trust_checkpoint)
    layer_name, layer_module = resolve_layer(net, metadata, layer)
    target_idx = resolve_targets(metadata, targets)
    target_names = _target_names(metadata, target_idx)
    settings = {  # what a done-marker must match for its scan to be complete
        "method": "smocam",
        "model": str(model or DEFAULT_MODEL) if model_file is not None else f"<{type(net).__name__} in memory>",
        "model_sha256": file_sha256(model_file) if model_file is not None else model_fingerprint(net, metadata),
        "layer": layer_name,
        "targets": target_names,
        **effective,
        "lut_sha256": file_sha256(lut) if lut is not None else None,
        "preprocessing_version": PREPROCESSING_VERSION,
    }

    prepare_out(out)  # an unusable --out fails now, not after the first scan
    ctx = dist_context(device)
    job_lock = None
    try:
        net = net.to(ctx.device).eval()
        job = _job_id(ctx)
        job_lock = _job_lock(out, job)
        job_lock.acquire(shared=True)  # held while this rank runs: its record files are live
        run = ScanRun(model=net, metadata=metadata, layer_module=layer_module, targets=target_idx,
                      target_names=target_names, lut=lut_names, smocam_kwargs=smocam_kwargs,
                      internal_batch_size=internal_batch_size, device=ctx.device, settings=settings,
                      run_info={"rank": ctx.rank, "world_size": ctx.world_size, "device": str(ctx.device),
                                "torch_threads": torch.get_num_threads(), "internal_batch_size": internal_batch_size},
                      labels_given=bool(label_map))
        items = [ScanItem(i, s, sid, label_map.get(s)) for i, (s, sid) in enumerate(zip(scans, sids))]
        records = _run_rank(out, job, ctx, items, run, force=force, show_progress=show_progress)
        ctx.barrier()
        files: Dict[str, Path] = {}
        if ctx.is_main:
            records, files = _finish_cohort(out, job, ctx.world_size, settings, lut, target_names,
                                            with_labels=bool(label_map))
        ctx.barrier()
    finally:
        if job_lock is not None:
            job_lock.release()
        ctx.close()
    result = {"out": out, "files": files, "records": records, "rank": ctx.rank}
    for status in ("done", "skipped", "failed"):
        result[f"n_{status}"] = sum(r["status"] == status for r in records)
    return result



def _study(images, labels, lut, pair_labels: str) -> Tuple[List[Path], List[str], Dict[Path, Path], Optional[Path]]:
    """``(scans, their subject ids, scan -> label map, LUT path or None)``; refuses ids that would collide.

    Without a ``lut``, a ``labels.txt`` beside the first label map is used if there is one.
    """
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
    return scans, sids, label_map, lut


def _target_names(metadata: dict, target_idx: List[int]) -> List[str]:
    """The names of the explained outputs; refuses two whose map files would have one name."""
    target_names = [str(metadata["output_names"][i]) for i in target_idx]
    file_names = [target_file_name(t) for t in target_names]
    clash = sorted({f for f in file_names if file_names.count(f) > 1})
    if clash:
        raise ValueError(f"targets {[t for t in target_names if target_file_name(t) == clash[0]]} would share the "
                         f"map file name *_smocam_{clash[0]}.nii.gz; explain them in separate runs")
    return target_names


def _job_id(ctx: DistContext) -> str:
    """An id shared by the ranks of this run and by no other run (names the per-rank record files)."""
    job = [uuid.uuid4().hex[:12]]
    if ctx.initialized:
        import torch.distributed as dist

        dist.broadcast_object_list(job, src=0)
    return str(job[0])


def _job_lock(out: Path, job: str) -> FileLock:
    """The lock of run ``job``: each of its ranks holds it (shared) while it runs, so its record files are live
    exactly while someone holds it."""
    return FileLock(child_path(out / LOCK_DIR, f"job-{job}.lock"))


def _rank_manifest(out: Path, job: str, rank: int) -> Path:
    """Where a rank keeps its records while running: per job, so that concurrent runs never share one."""
    return child_path(out, f".manifest.{job}.rank-{rank}.json")


def _run_rank(out: Path, job: str, ctx: DistContext, items: List[ScanItem], run: ScanRun, *, force: bool,
              show_progress: bool) -> List[dict]:
    """This rank's scans, one :func:`captum_smocam.cohort_scan.run_scan` each under the scan's lock; returns
    their records.

    First pass: the scans no other run is working on. Second pass: wait for the others' scans, then
    take them over only if they are still not complete (the other run failed or used other settings).
    The records are written to the rank's record file after every scan.
    """
    from tqdm.auto import tqdm

    mine = list(range(ctx.rank, len(items), ctx.world_size))
    records: List[dict] = []
    write_json(records, _rank_manifest(out, job, ctx.rank))
    desc = "cohort" if ctx.world_size == 1 else f"cohort rank {ctx.rank}/{ctx.world_size}"
    bar = tqdm(total=len(mine), desc=desc, unit="scan", disable=not show_progress, file=sys.stderr)
    busy: List[int] = []
    for blocking, queue in ((False, mine), (True, busy)):
        for i in queue:
            oset = scan_set(out, items[i].sid)
            if not oset.acquire(blocking=blocking):
                busy.append(i)
                continue
            try:
                record = run_scan(items[i], oset, run, redo=force and not blocking, waited=blocking, bar=bar)
            finally:
                oset.release()
            records.append(record)
            write_json(records, _rank_manifest(out, job, ctx.rank))
            bar.update(1)
    bar.close()
    return records


def _read_scan_csv(out: Path, sid: str, role: str) -> Optional[pd.DataFrame]:
    """A complete scan's CSV, read under the scan's lock (a concurrent run may be replacing the set)."""
    with scan_set(out, sid) as oset:
        marker = oset.read_manifest()
        name = f"{sid}_{role}.csv"
        if not marker or name not in marker.get("files", []):
            return None
        return pd.read_csv(child_path(oset.folder, name))


def _merge_cohort(out: Path, records: List[dict], target_names: List[str], with_labels: bool) -> Dict[str, Path]:
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
    write_scan_csv(written["cohort_predictions"], wide)
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
    write_scan_csv(written["cohort_regions"], cohort)
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


def _retire_stale_cohort_files(out: Path, written: Dict[str, Path]) -> None:
    """Remove the cohort files of an earlier run that this run did not write (e.g. ``cohort_regions.csv`` of a
    run with ``--labels``, or ``cohort_predictions.csv`` when every scan failed): nothing stale looks current."""
    kept = {p.name for p in written.values()}
    for name in COHORT_FILES:
        if name not in kept:
            child_path(out, name).unlink(missing_ok=True)


def _finish_cohort(out: Path, job: str, world_size: int, settings: dict, lut: Optional[Path],
                   target_names: List[str], *, with_labels: bool) -> Tuple[List[dict], dict]:
    """Rank 0, after every rank is done: all records, the cohort tables and ``manifest.json``.

    Returns the records of all scans (in scan order) and the cohort files written.
    """
    records: List[dict] = []
    for r in range(world_size):
        with open(_rank_manifest(out, job, r), encoding="utf-8") as fh:
            records.extend(json.load(fh))
    records.sort(key=lambda rec: rec["index"])
    files = _merge_cohort(out, records, target_names, with_labels)
    _retire_stale_cohort_files(out, files)
    counts = {s: sum(r["status"] == s for r in records) for s in ("done", "skipped", "failed")}
    write_json({
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": versions(),
        "settings": settings,
        "references": sorted({str(r["references"]) for r in records if r.get("references")}),
        "lut": str(lut) if lut is not None else None,
        "world_size": world_size,
        "n_scans": len(records),
        **{f"n_{k}": v for k, v in counts.items()},
        "cohort_files": {k: p.name for k, p in files.items()},
        "scans": records,
    }, out / "manifest.json")
    for r in range(world_size):
        _rank_manifest(out, job, r).unlink(missing_ok=True)
    _job_lock(out, job).path.unlink(missing_ok=True)  # no record file of this run is left to guard
    _clean_dead_runs(out, job)
    return records, files


def _clean_dead_runs(out: Path, job: str) -> None:
    """Remove the record files of runs no process is running any more (killed ones), whatever their age.

    A run is live while any of its ranks holds its lock (:func:`_job_lock`); if
    this process can take that lock exclusively, the run is dead and its record
    files and lock file go (the lock held meanwhile: no one can be using them).
    """
    jobs = {m.group("job") for p in out.glob(".manifest.*.rank-*.json") if (m := _RANK_MANIFEST.match(p.name))}
    for other in sorted(jobs - {job}):
        lock = _job_lock(out, other)
        if not lock.acquire(blocking=False):
            continue  # a live run: its files stay
        try:
            for p in out.glob(f".manifest.{other}.rank-*.json"):
                p.unlink(missing_ok=True)
            lock.path.unlink(missing_ok=True)
        finally:
            lock.release()
