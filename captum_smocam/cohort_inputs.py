"""A study's inputs: the list of scans, the id naming each scan's outputs, label maps paired with scans.

:func:`find_scans` expands globs, list files and paths; :func:`subject_id`
reads a BIDS ``sub-<label>[_ses-<label>]`` from a file name; :func:`match_labels`
pairs label maps with scans by that id (or, only when asked, by sorted order).
Used by ``smocam cohort`` (:func:`captum_smocam.cohort.run_cohort`).
"""
from __future__ import annotations

import glob
import os
import re
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Union

from ._io import nifti_stem

__all__ = ["find_scans", "subject_id", "match_labels", "PAIRINGS"]

_BIDS_SUB = re.compile(r"(?:^|_)(sub-[A-Za-z0-9]+)")
_BIDS_SES = re.compile(r"(?:^|_)(ses-[A-Za-z0-9]+)")
_LIST_SUFFIXES = (".txt", ".lst")


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
        ValueError: no item given, an empty item, or a glob matches nothing.

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
    empty = [i for i in items if not i.strip()]
    if empty:
        raise ValueError(f"an image path is empty ({empty[0]!r}); expected a glob such as 'data/sub-*_T1w.nii.gz', "
                         "a list file or paths")
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
