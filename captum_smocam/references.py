"""Reference scans from the user's own data: build K of them, attach them to a checkpoint, say which were used.

SMOCAM's ``"preserve"`` objective measures a mask against reference inputs:
the ``baselines`` of a call, else the model's ``reference_inputs`` buffer
(:func:`captum_smocam.models.set_reference_inputs`), else a fallback made from
the scan itself. The shipped checkpoints carry 8 training scans; a model the
user brings carries none. :func:`build_references` makes K references from a
folder or list of the user's NIfTI scans with exactly the preprocessing of
``smocam explain`` (:func:`captum_smocam.nifti.load_scan` with the checkpoint's
metadata), and :func:`attach_references` writes a checkpoint that carries them,
with their provenance in its metadata (``reference_provenance``: which files,
when, how they were preprocessed and picked). ``smocam references`` is the
command line of :func:`attach_references`.

Every output says which references were used: :attr:`captum_smocam.SMOCAM.reference_source`
records the choice of each call, and :func:`describe_references` completes it
with the checkpoint's provenance for manifests and printed summaries.
"""
from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .cohort_inputs import find_scans
from .models import MAX_REFERENCE_INPUTS, save_checkpoint, set_reference_inputs

__all__ = [
    "DEFAULT_K",
    "PROVENANCE_KEY",
    "find_reference_scans",
    "choose_reference_scans",
    "build_references",
    "attach_references",
    "describe_references",
]

#: References built when no number is given: as many as the shipped checkpoints carry.
DEFAULT_K = 8
#: The checkpoint metadata key that records where the references came from.
PROVENANCE_KEY = "reference_provenance"

_NIFTI = ("*.nii", "*.nii.gz")

ScansArg = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]


def find_reference_scans(scans: ScansArg) -> List[Path]:
    """The candidate scans: a folder's T1 scans, or globs, list files and paths; sorted, each checked to exist.

    A folder contributes its ``*_T1w.nii`` / ``*_T1w.nii.gz`` files (BIDS T1
    scans, as ``smocam synth`` writes them beside their label maps) when it
    has any, else every ``.nii`` / ``.nii.gz`` file in it (not its
    sub-folders). Anything else is expanded by
    :func:`captum_smocam.cohort_inputs.find_scans` (globs, ``.txt`` list
    files, paths), as ``smocam cohort --images`` does.

    Args:
        scans (str, Path or sequence of them): a folder, globs, list files or paths.

    Returns:
        list of pathlib.Path: sorted, without duplicates.

    Raises:
        FileNotFoundError: a listed scan does not exist.
        ValueError: nothing was found.

    Examples::

        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> for name in ("sub-02_T1w.nii.gz", "sub-01_T1w.nii.gz", "sub-01_labels.nii.gz"):
        ...     _ = open(os.path.join(d, name), "w")
        >>> [p.name for p in find_reference_scans(d)]
        ['sub-01_T1w.nii.gz', 'sub-02_T1w.nii.gz']
    """
    items = [scans] if isinstance(scans, (str, os.PathLike)) else list(scans)
    found: List[Path] = []
    rest: List[str] = []
    for item in items:
        if os.path.isdir(item):
            folder = Path(item)
            t1 = [p for pattern in ("*_T1w.nii", "*_T1w.nii.gz") for p in folder.glob(pattern)]
            files = t1 or [p for pattern in _NIFTI for p in folder.glob(pattern)]
            if not files:
                raise ValueError(f"no NIfTI file (.nii or .nii.gz) in the folder {str(folder)!r}")
            found.extend(p for p in files if p.is_file())
        else:
            rest.append(os.fspath(item))
    if rest:
        found.extend(find_scans(rest))
    if not found:
        raise ValueError(f"no scans given; expected a folder, globs, a list file or paths, got {scans!r}")
    paths = sorted({Path(os.path.normpath(p)) for p in found}, key=str)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"scan not found: {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                                   if len(missing) > 1 else ""))
    return paths


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_REFERENCE_INPUTS:
        raise ValueError(f"k must be an integer in [1, {MAX_REFERENCE_INPUTS}], got {k!r}")
    return int(k)


def choose_reference_scans(paths: Sequence[Union[str, os.PathLike]], k: int = DEFAULT_K, seed: int = 0
                           ) -> List[Path]:
    """``k`` of the scans, drawn without replacement (seeded), in the order of the sorted list.

    The draw is ``numpy.random.default_rng(seed).choice(n, k, replace=False)``
    over the sorted paths, so the same files and seed give the same
    references on any machine; all ``n`` scans when ``k == n``.

    Args:
        paths (sequence of str or Path): the candidates (:func:`find_reference_scans`).
        k (int, optional): how many, ``1 <= k <= min(n, MAX_REFERENCE_INPUTS)``. Default: :data:`DEFAULT_K`
        seed (int, optional): of the draw. Default: 0

    Returns:
        list of pathlib.Path: the chosen scans, sorted.

    Raises:
        ValueError: ``k`` out of range, or fewer than ``k`` candidates.

    Examples::

        >>> [p.name for p in choose_reference_scans([f"s{i}.nii" for i in range(5)], k=5)]
        ['s0.nii', 's1.nii', 's2.nii', 's3.nii', 's4.nii']
        >>> len(choose_reference_scans([f"s{i}.nii" for i in range(20)], k=3, seed=1))
        3
    """
    k = _check_k(k)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    paths = sorted((Path(p) for p in paths), key=str)
    if len(paths) < k:
        raise ValueError(f"found {len(paths)} scan(s); need at least k={k} (give more scans, or a smaller k)")
    idx = np.sort(np.random.default_rng(int(seed)).choice(len(paths), size=k, replace=False))
    return [paths[i] for i in idx]


def _build(scans: ScansArg, metadata: Mapping[str, Any], k: int, seed: int) -> Tuple[Tensor, List[Path], int]:
    """``(references, the chosen files, the number of candidates)``."""
    from .nifti import load_scan

    candidates = find_reference_scans(scans)
    chosen = choose_reference_scans(candidates, k, seed)
    tensors = []
    for path in chosen:
        x, _ = load_scan(path, metadata)
        tensors.append(x)
    return torch.cat(tensors).contiguous(), chosen, len(candidates)


def build_references(scans: ScansArg, metadata: Mapping[str, Any], k: int = DEFAULT_K, seed: int = 0) -> Tensor:
    """K reference inputs from the user's scans, preprocessed exactly as ``smocam explain`` preprocesses a scan.

    The candidates are found by :func:`find_reference_scans`, ``k`` of them
    drawn by :func:`choose_reference_scans`, and each read with
    :func:`captum_smocam.nifti.load_scan` and ``metadata``: re-oriented to
    RAS+, resampled onto the model grid (``input_shape``, ``affine``) and
    normalised (``intensity_normalization``). Use scans of the model's
    population (same modality and registration), not the scans you will
    explain: a reference equal to the explained scan tells the mask nothing.

    Args:
        scans (str, Path or sequence of them): a folder, globs, list files or paths of NIfTI scans.
        metadata (Mapping): the checkpoint metadata (``input_shape``,
            ``affine``, ``intensity_normalization``).
        k (int, optional): how many references. Default: :data:`DEFAULT_K`
        seed (int, optional): of the draw of ``k`` scans. Default: 0

    Returns:
        Tensor: float32, ``K x 1 x X x Y x Z`` on the model grid, for
        :func:`captum_smocam.models.set_reference_inputs` or SMOCAM's ``baselines``.

    Raises:
        FileNotFoundError: a scan does not exist.
        ValueError: fewer than ``k`` scans, a bad ``k``, incomplete metadata,
            or a scan :func:`~captum_smocam.nifti.load_scan` refuses.

    Examples::

        >>> from captum_smocam.pipeline import load_model
        >>> model, meta = load_model("vgg")  # doctest: +SKIP
        >>> refs = build_references("my_scans/", meta, k=8)  # doctest: +SKIP
        >>> refs.shape  # doctest: +SKIP
        torch.Size([8, 1, 56, 68, 60])
    """
    return _build(scans, metadata, k, seed)[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _provenance(chosen: List[Path], n_candidates: int, metadata: Mapping[str, Any], k: int, seed: int) -> dict:
    from . import __version__
    from .nifti import PREPROCESSING_VERSION

    return {
        "source": "scans",
        "files": [str(p.resolve()) for p in chosen],
        "sha256": [_sha256(p) for p in chosen],
        "n_candidates": int(n_candidates),
        "k": int(k),
        "seed": int(seed),
        "selection": f"numpy default_rng({int(seed)}).choice without replacement among the sorted candidates",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "preprocessing": {
            "loader": "captum_smocam.nifti.load_scan (as smocam explain)",
            "preprocessing_version": PREPROCESSING_VERSION,
            "input_shape": [int(s) for s in metadata["input_shape"]],
            "intensity_normalization": str(metadata["intensity_normalization"]),
        },
        "stored_as": "float16",
        "captum_smocam_version": __version__,
    }


def attach_references(checkpoint_in: Union[str, os.PathLike], scans: ScansArg,
                      checkpoint_out: Union[str, os.PathLike], k: int = DEFAULT_K, seed: int = 0, *,
                      overwrite: bool = False) -> Dict[str, Any]:
    """Write a copy of a checkpoint that carries K references built from the user's scans.

    The model is read with :func:`captum_smocam.pipeline.resolve_model` (a
    shipped name or a checkpoint file), the references built by
    :func:`build_references` from its metadata, attached with
    :func:`captum_smocam.models.set_reference_inputs` (replacing any it had)
    and the whole saved with :func:`captum_smocam.models.save_checkpoint`
    (atomically; references stored as float16). The metadata gains
    :data:`PROVENANCE_KEY`: the files (absolute paths and the first 16 hex
    digits of their SHA-256), how many candidates there were, ``k``, the seed,
    when (UTC), and the preprocessing (loader, its version, grid,
    normalisation); the provenance of the references it replaces, if any,
    is kept under ``"replaces"``.

    Args:
        checkpoint_in (str or Path): a shipped model name or a checkpoint file.
        scans (str, Path or sequence of them): a folder, globs, list files or
            paths of NIfTI scans (:func:`find_reference_scans`).
        checkpoint_out (str or Path): the checkpoint to write.
        k (int, optional): how many references. Default: :data:`DEFAULT_K`
        seed (int, optional): of the draw of ``k`` scans. Default: 0
        overwrite (bool, optional): replace an existing ``checkpoint_out``. Default: False

    Returns:
        dict: the metadata as written.

    Raises:
        FileExistsError: ``checkpoint_out`` exists and ``overwrite`` is False.
        FileNotFoundError, ValueError: as :func:`build_references`, or an
            unreadable checkpoint.

    Examples::

        >>> meta = attach_references("vgg", "my_scans/", "vgg_my_refs.pt", k=8)  # doctest: +SKIP
        >>> meta["n_reference_inputs"], len(meta["reference_provenance"]["files"])  # doctest: +SKIP
        (8, 8)
    """
    from .pipeline import resolve_model

    out = Path(checkpoint_out)
    if out.is_dir():
        raise IsADirectoryError(f"{str(out)!r} is a folder; expected the name of the checkpoint file to write")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{str(out)!r} exists; choose another name, or overwrite it (--force)")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the folder of {str(out)!r} does not exist")
    model, meta, _ = resolve_model(os.fspath(checkpoint_in))
    refs, chosen, n_candidates = _build(scans, meta, k, seed)
    set_reference_inputs(model, refs)
    meta = dict(meta)
    provenance = _provenance(chosen, n_candidates, meta, k, seed)
    previous = meta.get(PROVENANCE_KEY)
    if previous is not None or meta.get("n_reference_inputs"):
        provenance["replaces"] = previous if previous is not None else {
            "source": "the checkpoint's own", "n": int(meta["n_reference_inputs"]), "from": str(checkpoint_in)}
    meta[PROVENANCE_KEY] = provenance
    return save_checkpoint(out, model, meta)


def describe_references(reference_source: Optional[str], metadata: Optional[Mapping[str, Any]] = None) -> str:
    """One line saying which references a SMOCAM call used, with the checkpoint's provenance when it has one.

    Args:
        reference_source (str, optional): :attr:`captum_smocam.SMOCAM.reference_source`
            of the call (None: the method used no SMOCAM).
        metadata (Mapping, optional): the checkpoint metadata of the model explained.

    Returns:
        str: ``reference_source``, completed for ``"model: ..."`` by where
        the checkpoint's references came from.

    Examples::

        >>> meta = {"reference_provenance": {"files": ["/d/a.nii", "/d/b.nii"], "created": "2026-12-02T10:00:00+00:00"}}
        >>> describe_references("model: 2 reference_inputs", meta)
        'model: 2 reference_inputs (built from 2 scans in /d on 2026-12-02T10:00:00+00:00)'
        >>> describe_references("model: 8 reference_inputs", {})
        "model: 8 reference_inputs (the checkpoint's own)"
    """
    if reference_source is None:
        return "none: no SMOCAM map"
    if not reference_source.startswith("model:"):
        return reference_source
    provenance = (metadata or {}).get(PROVENANCE_KEY)
    if not isinstance(provenance, Mapping) or not provenance.get("files"):
        return f"{reference_source} (the checkpoint's own)"
    files = [str(f) for f in provenance["files"]]
    folders = sorted({os.path.dirname(f) for f in files})
    where = f"in {folders[0]}" if len(folders) == 1 else f"in {len(folders)} folders"
    return f"{reference_source} (built from {len(files)} scans {where} on {provenance.get('created', '?')})"
