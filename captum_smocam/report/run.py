"""A finished ``smocam cohort`` run read back: its manifest, tables and maps, and the grid the report draws on.

:func:`load_run` reads the run folder (files named by
:func:`captum_smocam.cohort_scan.scan_output_names`, as the run wrote them);
:func:`read_truth` the true values of a CSV; :class:`DisplayGrid` brings every
map and scan onto the first subject's map grid (RAS+) in world coordinates.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import pandas as pd

from .._io import child_path
from ..cohort_scan import scan_output_names

__all__ = ["CohortRun", "load_run", "read_truth", "DisplayGrid"]


@dataclass
class CohortRun:
    """What a finished ``smocam cohort`` run folder holds (:func:`load_run`)."""

    folder: Path
    manifest: dict
    targets: List[str]
    subjects: List[str]  # complete scans with every map present, in the manifest's order
    failed: List[dict]  # manifest records of failed scans
    incomplete: List[str]  # complete in the manifest but with files missing now
    predictions: pd.DataFrame  # index subject, one column per output
    regions: Optional[pd.DataFrame]  # long: subject, target, label, name, ..., share
    records: Dict[str, dict] = field(default_factory=dict)

    @property
    def settings(self) -> dict:
        return dict(self.manifest.get("settings") or {})

    def map_path(self, subject: str, target: str) -> Path:
        """The NIfTI map of one subject and target."""
        name = scan_output_names(subject, self.targets, False)[f"map:{target}"]
        return child_path(child_path(self.folder, subject), name)


def load_run(run_dir: Union[str, os.PathLike]) -> CohortRun:
    """Read a ``smocam cohort`` run folder: its manifest, the predictions and region tables of complete scans.

    Args:
        run_dir (str or Path): the run's ``--out`` folder.

    Returns:
        CohortRun: the run.

    Raises:
        FileNotFoundError: no such folder, or no ``manifest.json`` in it.
        ValueError: an unreadable manifest, no complete scan, or no maps.
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder not found: {folder}")
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        raise FileNotFoundError(f"{folder} has no manifest.json: not a finished smocam cohort run "
                                f"(run smocam cohort --out {folder} first)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        records = list(manifest["scans"])
        targets = [str(t) for t in manifest["settings"]["targets"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read {mpath}: {type(exc).__name__}: {exc}") from None
    failed = [r for r in records if r.get("status") == "failed"]
    complete = [r["subject"] for r in records if r.get("status") in ("done", "skipped")]
    if not complete:
        raise ValueError(f"{folder}: no complete scan ({len(failed)} failed): nothing to report")
    subjects, incomplete, preds, regions = [], [], [], []
    for sid in complete:
        files = {k: child_path(child_path(folder, sid), v) for k, v in scan_output_names(sid, targets, True).items()}
        maps = [files[f"map:{t}"] for t in targets]
        if not all(p.is_file() for p in maps) or not files["predictions"].is_file():
            incomplete.append(sid)
            continue
        subjects.append(sid)
        preds.append(pd.read_csv(files["predictions"]))
        if files["regions"].is_file():
            regions.append(pd.read_csv(files["regions"]))
    if not subjects:
        raise ValueError(f"{folder}: no maps: the {len(complete)} complete scan(s) of the manifest have no "
                         f"<subject>_smocam_<target>.nii.gz files (moved or deleted?)")
    long = pd.concat(preds, ignore_index=True)
    wide = long.pivot(index="subject", columns="output", values="prediction")
    wide = wide.loc[subjects, list(dict.fromkeys(long["output"]))]
    return CohortRun(folder=folder, manifest=manifest, targets=targets, subjects=subjects, failed=failed,
                     incomplete=incomplete, predictions=wide,
                     regions=pd.concat(regions, ignore_index=True) if regions else None,
                     records={r["subject"]: r for r in records})


def read_truth(path: Union[str, os.PathLike], subjects: Sequence[str], targets: Sequence[str]) -> pd.DataFrame:
    """True values from a CSV with a ``subject`` column and one column per output (``volumes.csv`` of ``smocam synth``).

    Returns:
        pandas.DataFrame: index: the run's subjects found in the file; columns:
        the targets the file has.

    Raises:
        FileNotFoundError: no such file.
        ValueError: no ``subject`` column, no column named like a target, or
            no row for any of the run's subjects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"truth file not found: {path}")
    table = pd.read_csv(path)
    if "subject" not in table.columns:
        raise ValueError(f"truth file {path} has no 'subject' column; its columns are {list(table.columns)[:8]}")
    cols = [t for t in targets if t in table.columns]
    if not cols:
        raise ValueError(f"truth file {path} has no column named like a target ({', '.join(targets)}); "
                         f"its columns are {list(table.columns)[:8]}")
    table = table.assign(subject=table["subject"].astype(str)).drop_duplicates("subject").set_index("subject")
    found = [s for s in subjects if s in table.index]
    if not found:
        raise ValueError(f"truth file {path} has no row for any of the run's {len(subjects)} subjects "
                         f"(run: {', '.join(list(subjects)[:3])}...; file: {', '.join(map(str, table.index[:3]))}...)")
    return table.loc[found, cols].astype(float)


class DisplayGrid:
    """The display grid (the first subject's map grid, RAS+) and loading any map or scan onto it."""

    def __init__(self, first_map: Path):
        import nibabel as nib

        img = nib.as_closest_canonical(nib.load(str(first_map)))
        self.shape = tuple(int(n) for n in img.shape[:3])
        self.affine = np.asarray(img.affine, dtype=np.float64)

    def load(self, path: Path, order: int = 1) -> np.ndarray:
        import nibabel as nib

        from ..spatial import resample

        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.nan_to_num(np.asarray(img.get_fdata(dtype=np.float32)))
        data = data.reshape(data.shape[:3])
        if data.shape == self.shape and np.allclose(img.affine, self.affine, atol=1e-4):
            return data
        return resample(data, img.affine, self.affine, self.shape, order=order)[0]

    def image(self, data: np.ndarray):
        import nibabel as nib

        return nib.Nifti1Image(np.asarray(data, dtype=np.float32), self.affine)

    def background(self, run: CohortRun, background: str):
        """The MNI152 template (nilearn's bundled copy) or a subject's scan, on the grid."""
        from ..spatial import resample

        if background == "template":
            from nilearn import datasets

            tpl = datasets.load_mni152_template(resolution=2)
            data = np.asarray(tpl.get_fdata(dtype=np.float32))
            return self.image(resample(data, tpl.affine, self.affine, self.shape)[0])
        record = run.records.get(background)
        if record is None:
            raise ValueError(f"background must be 'template' or a subject of the run; got {background!r} "
                             f"(subjects: {', '.join(run.subjects[:3])}...)")
        scan = Path(record["scan"])
        if not scan.is_file():
            raise FileNotFoundError(f"scan of background subject {background!r} not found: {scan}")
        return self.image(self.load(scan))
