"""What a benchmark runs on: models, synthetic subjects, their structures and splits, the training cache.

Every script in ``benchmarks/`` resolves a model, draws subjects of the model's
synthetic cohort and reads structure masks the same way, through these
functions; ``benchmarks/train.py`` caches the cohort it trains on under the
names :func:`cache_stem` gives, and the asymmetry benchmark reads the training
volumes back with :func:`read_training_volumes`.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.nn import Module

from .. import synth
from ..synth.deformation import _exact_volumes, _solve_deformation
from ..synth.subjects import _draw
from ..synth import structure_label, structure_mask  # here too: every benchmark script reads them from here
from ..models import VGG3D, default_model_file
from ..preprocessing import canonical_normalization, normalize_intensity

__all__ = [
    "POSTER_TARGETS",
    "SHIPPED_VGG_ARCH",
    "CACHE_NORMALIZATION",
    "CACHE_CHUNK",
    "untrained_model",
    "load_model",
    "shipped_model_available",
    "load_subject",
    "structure_mask",
    "structure_label",
    "contralateral",
    "voxel_spacing",
    "split_indices",
    "reference_scans",
    "cohort_volumes",
    "synth_sha1",
    "same_synth",
    "FINGERPRINT_SUBJECTS",
    "FINGERPRINT_SPACING",
    "LEGACY_SYNTH_SHA1",
    "chunk_ranges",
    "cache_stem",
    "read_training_volumes",
]

#: The structures the SMOCAM poster explains: the default targets of the benchmarks.
POSTER_TARGETS = ("left_lateral_ventricle", "right_lateral_ventricle", "left_hippocampus", "right_hippocampus")
#: Architecture of the shipped VGG3D (``captum_smocam/data/vgg3d_default.pt``).
SHIPPED_VGG_ARCH = {"channels": (8, 16, 32, 64), "convs_per_block": (1, 1, 2, 2), "hidden": 64, "pool_size": 4}
#: Intensity normalisation of the cached training images (that of the shipped models).
CACHE_NORMALIZATION = "zscore_nonzero"
#: Splits longer than this are cached in chunks of this many subjects, so that growing the
#: training split from 400 to 800 subjects generates only the 400 new ones.
CACHE_CHUNK = 400

# --------------------------------------------------------------------------- models
def untrained_model(seed: int = 0) -> Tuple[Module, dict]:
    """A randomly initialised VGG3D with the shipped architecture, and checkpoint metadata for it.

    Cost does not depend on the weights, so timing benchmarks can run on it
    where the shipped weights are absent. The outputs are de-standardised around
    the template's volumes (mean = template volume, sd = 10 % of it), so that
    predictions are plausible volumes in cm³; the metadata has every key of a
    shipped checkpoint that the package reads (development only: the splits and
    the cohort are those of a shipped model, the weights are not trained).

    Args:
        seed (int, optional): seed of the weights; the global torch random state
            is left as it was. Default: 0

    Returns:
        tuple: ``(model, metadata)``, the model in eval mode.

    Examples::

        >>> net, meta = untrained_model()
        >>> type(net).__name__, meta["default_layer"], len(meta["output_names"])
        ('VGG3D', 'features.block3', 16)
    """
    names = list(synth.STRUCTURE_NAMES)
    template = synth.template_volumes()
    mean = [template[n] for n in names]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = VGG3D(len(names), **SHIPPED_VGG_ARCH, output_mean=mean, output_std=[0.1 * m for m in mean]).eval()
    shape, affine = synth.default_grid(synth.DEFAULT_SPACING)
    meta = {
        "output_names": names,
        "output_units": "cm3",
        "output_mean": mean,
        "output_std": [float(s) for s in net.output_std],
        "default_layer": net.default_layer,
        "input_shape": [int(s) for s in shape],
        "spacing_mm": synth.DEFAULT_SPACING,
        "affine": np.asarray(affine, dtype=float).tolist(),
        "intensity_normalization": CACHE_NORMALIZATION,
        "splits": {"train": [0, 1000], "val": [10000, 10050], "test": [20000, 20100]},
        "lr_correlation": synth.DEFAULT_LR_CORRELATION,
        "cohort_seed": 0,
    }
    return net, meta


def load_model(spec: Optional[str] = None) -> Tuple[Module, dict]:
    """``(model, metadata)`` for a shipped name, a checkpoint path, or ``"untrained"``; eval mode.

    ``"untrained"`` is :func:`untrained_model` (development only); anything else
    goes through :func:`captum_smocam.pipeline.resolve_model`, the resolver of
    the ``smocam`` command. None is ``"vgg"``.

    Examples::

        >>> net, meta = load_model("untrained")
        >>> net.training
        False
    """
    if spec == "untrained":
        return untrained_model()
    from ..pipeline import resolve_model

    net, meta, _ = resolve_model(spec)
    return net, meta


def shipped_model_available(name: str = "vgg") -> bool:
    """Whether the shipped model ``name`` (a key of ``models.DEFAULT_MODELS``) is installed.

    Examples::

        >>> shipped_model_available("no such model")
        False
    """
    try:
        default_model_file(name)
    except (ValueError, FileNotFoundError):
        return False
    return True


# --------------------------------------------------------------------------- subjects
def load_subject(index: int, meta: dict, *, lr_correlation: Optional[float] = None,
                 cohort_seed: Optional[int] = None, overrides: Optional[dict] = None,
                 spacing: Optional[float] = None):
    """Generate one subject of a model's cohort, normalised as the model expects.

    Args:
        index (int): subject index (see the checkpoint's ``splits``).
        meta (dict): checkpoint metadata: ``lr_correlation``, ``intensity_normalization``,
            and optionally ``cohort_seed`` (default 0) and ``spacing_mm``.
        lr_correlation (float, optional): another cohort's left/right correlation.
            Default: the model's
        cohort_seed (int, optional): another cohort seed. Default: the model's
        overrides (dict, optional): volume factors, see :func:`captum_smocam.synth.generate_subject`.
        spacing (float, optional): grid spacing in mm. Default: the model's

    Returns:
        tuple: ``(x, subject)``: ``x`` the normalised image, float32 ``1 x 1 x X x Y x Z``,
        and the :class:`captum_smocam.synth.Subject` (labels, volumes, affine).

    Examples::

        >>> meta = {"lr_correlation": 0.95, "intensity_normalization": "zscore_nonzero", "spacing_mm": 12.0}
        >>> x, subject = load_subject(0, meta)
        >>> tuple(x.shape[:2]), x.dtype, x.shape[2:] == subject.labels.shape
        ((1, 1), torch.float32, True)
    """
    spacing = spacing if spacing is not None else meta.get("spacing_mm", synth.DEFAULT_SPACING)
    subject = synth.generate_subject(
        int(index),
        spacing=float(np.atleast_1d(spacing)[0]),
        lr_correlation=float(meta["lr_correlation"] if lr_correlation is None else lr_correlation),
        cohort_seed=int(meta.get("cohort_seed", 0) if cohort_seed is None else cohort_seed),
        overrides=overrides,
    )
    img = normalize_intensity(subject.image, canonical_normalization(meta["intensity_normalization"], warn=False))
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None], subject


def contralateral(name: str) -> Optional[str]:
    """The other side's structure name (``left_x`` <-> ``right_x``), or None if unpaired.

    Examples::

        >>> contralateral("left_hippocampus")
        'right_hippocampus'
        >>> contralateral("brainstem") is None
        True
    """
    for a, b in (("left_", "right_"), ("right_", "left_")):
        if name.startswith(a):
            return b + name[len(a):]
    return None


def voxel_spacing(subject) -> Tuple[float, ...]:
    """Voxel size in mm along each axis, from the subject's affine.

    Examples::

        >>> from types import SimpleNamespace
        >>> voxel_spacing(SimpleNamespace(affine=np.diag([3.0, 2.0, 1.0, 1.0])))
        (3.0, 2.0, 1.0)
    """
    return tuple(float(v) for v in np.linalg.norm(np.asarray(subject.affine)[:3, :3], axis=0))


def split_indices(meta: dict, split: str, n: Optional[int] = None) -> List[int]:
    """The first ``n`` subject indices of a split of the checkpoint (all of them if ``n`` is None).

    Examples::

        >>> split_indices({"splits": {"test": [20000, 20100]}}, "test", 3)
        [20000, 20001, 20002]
    """
    if split not in meta["splits"]:
        raise ValueError(f"unknown split {split!r}; the checkpoint has {sorted(meta['splits'])}")
    start, stop = (int(v) for v in meta["splits"][split])
    idx = list(range(start, stop))
    if n is not None:
        if n < 1 or n > len(idx):
            raise ValueError(f"asked for {n} {split} subjects; the split has {len(idx)}")
        idx = idx[:n]
    return idx


def reference_scans(meta: dict, n: int) -> torch.Tensor:
    """The first ``n`` training subjects of a model's cohort, normalised as the model saw them.

    What the shipped checkpoints carry as ``reference_inputs``
    (:func:`captum_smocam.models.set_reference_inputs`): SMOCAM's
    ``"preserve"`` objective blends the subject's features with theirs.

    Args:
        meta (dict): checkpoint metadata with ``splits``, ``lr_correlation``
            and ``intensity_normalization``.
        n (int): how many.

    Returns:
        Tensor: ``n x 1 x X x Y x Z`` float32.

    Examples::

        >>> _, meta = untrained_model()
        >>> reference_scans(meta, 2).shape  # doctest: +SKIP
        torch.Size([2, 1, 56, 68, 60])
    """
    return torch.cat([load_subject(i, meta)[0] for i in split_indices(meta, "train", n)])


def cohort_volumes(index: int, lr_correlation: float, cohort_seed: int = 0) -> Dict[str, float]:
    """Exact structure volumes (cm³) of ``synth.generate_subject(index, ...)`` without rendering the image.

    Runs the volume part of :func:`captum_smocam.synth.generate_subject` (the
    same draws, the same deformation solver with its fold guard, the Jacobian
    integral) and skips the warp and rendering, about 20 times faster. No
    overrides.
    """
    p = _draw(np.random.default_rng([cohort_seed, index]), lr_correlation)
    _, _, det, _ = _solve_deformation(p["log_factors"], (), p["waves"])
    return _exact_volumes(p["scale"], det)


# --------------------------------------------------------------------------- training cache
#: The subjects :func:`synth_sha1` generates: ``(index, lr_correlation)`` at :data:`FINGERPRINT_SPACING`, cohort 0.
FINGERPRINT_SUBJECTS = ((0, 0.95), (1, 0.0))
#: Grid spacing (mm) of those subjects: a 14 x 17 x 15 grid, under a second once the template is labelled.
FINGERPRINT_SPACING = 12.0

#: Values of :func:`synth_sha1` recorded before it hashed the data (it hashed the generator's source), each
#: with the fingerprint that the generator of that source gives: they name the same subjects. Each was
#: checked by running the generator of that source (``git archive`` of the commit) through this function.
LEGACY_SYNTH_SHA1 = {"17b59e39a75f": "0a22060e3247", "6ff179095482": "0a22060e3247"}


@functools.lru_cache(maxsize=1)
def synth_sha1() -> str:
    """First 12 hex digits of the SHA-1 of what the synthetic-data generator makes (recorded with cached data
    and checkpoints).

    The fingerprint of the data, not of the code: the image, label map and
    volumes of the subjects :data:`FINGERPRINT_SUBJECTS` at
    :data:`FINGERPRINT_SPACING` mm, so a refactor that leaves every subject
    as it was keeps it, and any change to a subject's image (to 0.001),
    labels or volumes (to 1e-9 cm³) changes it. Computed once per process
    (about a second after the template's labels, which generating any
    subject builds).
    """
    digest = hashlib.sha1()
    for index, lr_correlation in FINGERPRINT_SUBJECTS:
        s = synth.generate_subject(index, spacing=FINGERPRINT_SPACING, lr_correlation=lr_correlation)
        digest.update(np.round(np.asarray(s.image, dtype=np.float64), 3).tobytes())
        digest.update(np.ascontiguousarray(s.labels, dtype=np.int16).tobytes())
        digest.update(np.round([s.volumes[name] for name in synth.STRUCTURE_NAMES], 9).tobytes())
    return digest.hexdigest()[:12]


def same_synth(a: str, b: str) -> bool:
    """Whether two recorded :func:`synth_sha1` values name the same subjects (:data:`LEGACY_SYNTH_SHA1`).

    Examples::

        >>> same_synth("0123456789ab", "0123456789ab"), same_synth("0123456789ab", "ba9876543210")
        (True, False)
    """
    return LEGACY_SYNTH_SHA1.get(a, a) == LEGACY_SYNTH_SHA1.get(b, b)


def chunk_ranges(start: int, stop: int) -> List[Tuple[int, int]]:
    """``[(a, b), ...]``: the cached chunks that make up subjects ``[start, stop)``.

    Examples::

        >>> chunk_ranges(0, 1000)
        [(0, 400), (400, 800), (800, 1000)]
    """
    return [(a, min(a + CACHE_CHUNK, stop)) for a in range(start, stop, CACHE_CHUNK)]


def cache_stem(cache_dir, start: int, stop: int, lr_correlation: float, spacing: float, cohort_seed: int) -> Path:
    """Path prefix of one cached range of subjects; the name encodes everything that changes the data.

    ``{stem}_x.npy`` holds the float16 normalised images, ``{stem}_y.npy`` the
    volumes (cm³, ``N x S`` in ``synth.STRUCTURE_NAMES`` order) and
    ``{stem}_synth.txt`` the :func:`synth_sha1` of the generator that made
    them.

    Examples::

        >>> cache_stem("runs", 0, 400, 0.95, 3.0, 0).name[:17]
        'cohort_r0.95_0-40'
    """
    key = dict(start=start, stop=stop, lr_correlation=float(lr_correlation), spacing=float(spacing),
               cohort_seed=int(cohort_seed), normalization=CACHE_NORMALIZATION,
               names=list(synth.STRUCTURE_NAMES))
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return Path(cache_dir) / f"cohort_r{float(lr_correlation):g}_{start}-{stop}_{digest}"


def _volume_cache_files(meta: dict, cache_dir) -> List[Tuple[Path, Path]]:
    """``(volumes .npy, synth version .txt)`` of each cached chunk of the model's training split."""
    start, stop = (int(v) for v in meta["splits"]["train"])
    stems = [cache_stem(cache_dir, a, b, meta["lr_correlation"], meta.get("spacing_mm", synth.DEFAULT_SPACING),
                        meta.get("cohort_seed", 0)) for a, b in chunk_ranges(start, stop)]
    return [(Path(f"{stem}_y.npy"), Path(f"{stem}_synth.txt")) for stem in stems]


def read_training_volumes(meta: dict, cache_dir) -> Optional[np.ndarray]:
    """The volumes of a model's whole training split (``N x S``, cm³) from the training cache, or None.

    None when a chunk is missing, or was generated by a generator version other than
    the one(s) the model was trained on (``meta["synth_sha1"]``, comma-separated).

    Args:
        meta (dict): checkpoint metadata (``splits``, ``lr_correlation``, ``synth_sha1``,
            ``spacing_mm`` and ``cohort_seed`` if not the defaults).
        cache_dir (str or Path): the cache folder of ``benchmarks/train.py``.
    """
    trained_on = str(meta.get("synth_sha1", "")).split(",")
    parts = []
    for volumes, version in _volume_cache_files(meta, cache_dir):
        if not (volumes.is_file() and version.is_file()) or not any(
            same_synth(version.read_text().strip(), t) for t in trained_on
        ):
            return None
        parts.append(np.load(volumes))
    y = np.concatenate(parts)
    return y if y.ndim == 2 and y.shape[1] == len(synth.STRUCTURE_NAMES) else None
