"""NIfTI in and out: a user's T1 onto the model grid, an attribution back onto the scan.

Data flow::

    T1 file --load_scan--> 1 x 1 x X x Y x Z tensor on the model grid  (+ ScanInfo)
                               |
                        SMOCAM / Captum attribution (layer or input resolution)
                               |
    map file <--save_map-- resampled onto the ORIGINAL scan grid and affine

Both directions resample in world (scanner/MNI millimetre) coordinates with
:func:`captum_smocam.spatial.resample`: for every target voxel ``v`` the
source is sampled at ``inv(A_source) @ A_target @ v``, with linear (or
nearest-neighbour) interpolation. A target voxel whose centre lies outside the source's field of
view (further than half a voxel beyond its edge voxels) is set to 0. So a map
written by :func:`save_map` overlays the scan it came from in FSLeyes,
ITK-SNAP or nilearn, whatever the scan's orientation (LPS, oblique, ...).

The model grid comes from the checkpoint metadata written with the model:
``"input_shape"`` ``[X, Y, Z]``, ``"affine"`` (4 x 4, model voxel -> MNI mm)
and ``"intensity_normalization"`` (applied with
:func:`captum_smocam.preprocessing.normalize_intensity`). The scan must
already be registered to that space (e.g. MNI152); this module does not
register images.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple, Union

import nibabel as nib
import numpy as np
import torch

from ._io import atomic_write
from .preprocessing import canonical_normalization, normalize_intensity
from .spatial import RESAMPLING_ORDERS, GridArray, as_spatial_array, resample, upsample_to

__all__ = ["ScanInfo", "DataWarning", "load_scan", "load_label_map", "save_map", "map_to_grid", "MIN_GRID_COVERAGE"]


class DataWarning(UserWarning):
    """Something about an input file that the user should know, although it can be worked around
    (NaN voxels set to 0, a label map mostly outside the model grid). The ``smocam`` command prints
    these as ``smocam: warning: ...``; ``smocam cohort`` also records them per scan in its manifest."""


#: On a scan's own grid, voxels at or below this fraction of its largest |intensity| are background
#: (rounding dust of an interpolating resampler); see :func:`load_scan`.
FOREGROUND_FLOOR = 1e-6

#: Version of the steps of :func:`load_scan` (2: z-score statistics over the foreground found on the
#: scan's own grid). ``smocam cohort`` records it, so that results computed otherwise are redone.
PREPROCESSING_VERSION = 2

#: :func:`load_scan` refuses a scan that covers less than this fraction of the model grid.
MIN_GRID_COVERAGE = 0.5

_NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(eq=False)
class ScanInfo:
    """Where a tensor returned by :func:`load_scan` came from.

    Attributes:
        original_shape (tuple of int): shape of the image as stored in the file
            (a trailing length-1 4th dimension included).
        original_affine (numpy.ndarray): 4 x 4 voxel -> world affine of the file.
        original_header (nibabel header): the file's header.
        grid_shape (tuple of int): spatial shape ``(X, Y, Z)`` of the tensor
            (the model grid, or the canonical re-orientation of the scan when no
            metadata was given).
        grid_affine (numpy.ndarray): 4 x 4 voxel -> world affine of the tensor.
        source (str, optional): the path read, ``None`` for an in-memory image.
        coverage (float): fraction of the grid's voxels inside the scan's field
            of view (1.0 without metadata).
        intensity_normalization (str): normalisation applied (``"none"`` without
            metadata).
    """

    original_shape: Tuple[int, ...]
    original_affine: np.ndarray
    original_header: Any
    grid_shape: Tuple[int, int, int]
    grid_affine: np.ndarray
    source: Optional[str] = None
    coverage: float = 1.0
    intensity_normalization: str = "none"

    @property
    def original_spatial_shape(self) -> Tuple[int, int, int]:
        """The first three dimensions of :attr:`original_shape`."""
        return tuple(int(s) for s in self.original_shape[:3])


def _foreground_on_grid(data: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray,
                        dst_shape: Tuple[int, ...]) -> np.ndarray:
    """The scan's foreground, found on its own grid, as a boolean mask on the model grid.

    On the scan's own grid the foreground is every voxel above
    :data:`FOREGROUND_FLOOR` times the largest absolute intensity (above 0, up
    to the rounding dust an interpolating resampler leaves in the
    background). A model-grid voxel belongs to it when every scan voxel that
    its linear interpolation reads is foreground. So interpolated background
    values (spline ringing, partial voxels at the edge of the head) never count
    as head, and for a scan already on the model grid the mask is exactly its
    voxels above 0, the rule the shipped models were trained with.
    """
    peak = float(np.abs(data).max()) if data.size else 0.0
    foreground = (data > FOREGROUND_FLOOR * peak).astype(np.float32)
    on_grid, _ = resample(foreground, src_affine, dst_affine, dst_shape, order=1)
    return on_grid >= 1.0 - 1e-6


def _grid_from_metadata(metadata: Mapping) -> Tuple[Tuple[int, int, int], np.ndarray, str]:
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict (checkpoint metadata); got {type(metadata).__name__}")
    missing = [k for k in ("input_shape", "affine", "intensity_normalization") if k not in metadata]
    if missing:
        raise ValueError(
            f"metadata lacks key(s) {missing}; expected 'input_shape' [X, Y, Z], 'affine' (4x4 model "
            f"voxel -> MNI mm) and 'intensity_normalization'; got keys {sorted(metadata)}"
        )
    shape = tuple(int(s) for s in np.asarray(metadata["input_shape"]).ravel())
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"metadata['input_shape'] must be 3 positive ints [X, Y, Z]; got {metadata['input_shape']}")
    affine = np.asarray(metadata["affine"], dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError(f"metadata['affine'] must be an invertible 4x4 matrix; got {metadata['affine']!r}")
    method = metadata["intensity_normalization"]
    canonical_normalization(method, warn=False)  # an unknown name is an error before any work
    return shape, affine, str(method)


def _read_image(path: Path, what: str):
    """``nib.load(path)``; a missing or unreadable file raises an error that names it as ``what``."""
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for bad files
        raise ValueError(f"cannot read {what} {path}: {exc}") from exc


def load_scan(
    path_or_img: Union[str, os.PathLike, nib.spatialimages.SpatialImage],
    metadata: Optional[Mapping] = None,
) -> Tuple[torch.Tensor, ScanInfo]:
    """Read a T1 scan as a model input tensor.

    Steps: read the image (3-D, or 4-D with a single volume); re-orient it to
    the closest canonical (RAS+) orientation with
    ``nibabel.as_closest_canonical``; if ``metadata`` is given, resample it in
    world coordinates onto the model grid (``metadata["affine"]``,
    ``metadata["input_shape"]``; linear interpolation, 0 outside the scan's
    field of view) and normalise its intensities with
    ``normalize_intensity(x, metadata["intensity_normalization"], mask)``,
    where ``mask`` is the scan's foreground found on its *own* grid (voxels
    above 0, less rounding dust) and carried to the model grid (a model voxel
    counts when every scan voxel its interpolation reads is foreground): the
    z-score statistics do not depend on how the scan was resampled, and a scan
    already on the model grid is normalised exactly as the shipped models'
    training data were (its voxels above 0).
    Without metadata, the intensities are returned as stored (float32) on
    the canonical grid. NaN and Inf voxels are set to 0 (background) with a
    :class:`DataWarning` that counts them; a constant image (nothing to
    normalise or explain) is refused.

    Args:
        path_or_img (str, Path or nibabel image): a NIfTI file (``.nii`` /
            ``.nii.gz``, or any format nibabel reads) or a loaded image.
        metadata (dict, optional): checkpoint metadata with ``"input_shape"``,
            ``"affine"`` and ``"intensity_normalization"``. Default: ``None``

    Returns:
        tuple:
        - **scan** (*torch.Tensor*): float32, shape ``1 x 1 x X x Y x Z``.
        - **info** (*ScanInfo*): original shape/affine/header and the grid of
          ``scan``, to be passed to :func:`save_map`.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file cannot be read; the image is 2-D or has several
            volumes or is constant; metadata is incomplete; or the scan covers less than
            :data:`MIN_GRID_COVERAGE` of the model grid (wrong space or
            orientation).

    Examples::

        >>> import nibabel as nib, numpy as np
        >>> img = nib.Nifti1Image(np.random.rand(20, 24, 18).astype("float32"), np.diag([-2., 2., 2., 1.]))
        >>> meta = {"input_shape": [16, 20, 14], "affine": np.diag([2., 2., 2., 1.]) @ np.array(
        ...     [[1, 0, 0, -15], [0, 1, 0, 2], [0, 0, 1, 2], [0, 0, 0, 1.]]),
        ...     "intensity_normalization": "zscore_nonzero"}
        >>> x, info = load_scan(img, meta)
        >>> tuple(x.shape), info.original_shape
        ((1, 1, 16, 20, 14), (20, 24, 18))
    """
    source = None
    if isinstance(path_or_img, (str, os.PathLike)):
        path = Path(path_or_img)
        source = str(path)
        img = _read_image(path, "scan file")
    elif isinstance(path_or_img, nib.spatialimages.SpatialImage):
        img = path_or_img
    else:
        raise TypeError(
            f"path_or_img must be a path or a nibabel image; got {type(path_or_img).__name__}"
        )
    where = source or "image"
    original_shape = tuple(int(s) for s in img.shape)
    if len(original_shape) > 3 and all(s == 1 for s in original_shape[3:]):
        img = img.slicer[(slice(None),) * 3 + (0,) * (len(original_shape) - 3)]
    elif len(original_shape) != 3:
        raise ValueError(
            f"{where}: expected a 3-D T1 volume (or 4-D with one volume); got shape {original_shape}"
        )
    original_affine = np.asarray(img.affine, dtype=np.float64)
    canonical = nib.as_closest_canonical(img)
    try:
        data = np.asarray(canonical.get_fdata(dtype=np.float32))
    except Exception as exc:  # truncated/corrupt data blocks surface here
        raise ValueError(f"cannot read the image data of {where}: {exc}") from exc
    bad = ~np.isfinite(data)
    n_bad = int(bad.sum())
    if n_bad:
        warnings.warn(
            f"{where}: {n_bad} NaN/Inf voxel(s) ({100 * n_bad / data.size:.2f}% of the image) set to 0 "
            f"(background); check how the scan was made if they are inside the head",
            DataWarning, stacklevel=2,
        )
        data = np.where(bad, np.float32(0.0), data)
    if data.size and float(data.min()) == float(data.max()):
        raise ValueError(
            f"{where}: the image is constant (every voxel is {float(data.flat[0]):g}"
            f"{', after NaN/Inf set to 0' if n_bad else ''}); there is nothing to normalise or explain"
        )

    if metadata is None:
        grid_shape, grid_affine, method, coverage = data.shape, np.asarray(canonical.affine, float), "none", 1.0
    else:
        grid_shape, grid_affine, method = _grid_from_metadata(metadata)
        resampled, coverage = resample(data, canonical.affine, grid_affine, grid_shape, order=1)
        if coverage < MIN_GRID_COVERAGE:
            raise ValueError(
                f"{where}: the scan's field of view covers only {100 * coverage:.1f}% of the model grid "
                f"(need at least {100 * MIN_GRID_COVERAGE:.0f}%); is the scan registered to the model's "
                f"space (e.g. MNI152) with a correct affine?"
            )
        mask = None
        if method != "none":
            mask = _foreground_on_grid(data, canonical.affine, grid_affine, grid_shape)
            if not mask.any():
                raise ValueError(f"{where}: no voxel of the scan's foreground (intensity above 0) lies inside "
                                 f"the model grid; nothing to normalise")
        data = normalize_intensity(resampled, canonical_normalization(method, warn=False), mask=mask)
    info = ScanInfo(
        original_shape=original_shape,
        original_affine=original_affine,
        original_header=img.header.copy(),
        grid_shape=tuple(int(s) for s in grid_shape),
        grid_affine=np.asarray(grid_affine, dtype=np.float64),
        source=source,
        coverage=float(coverage),
        intensity_normalization=method,
    )
    tensor = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None, None]
    return tensor, info


def _canonical_grid(affine: np.ndarray, shape) -> Tuple[Tuple[int, int, int], np.ndarray]:
    """Shape and affine of ``nibabel.as_closest_canonical`` of an image with this affine and shape."""
    shape = tuple(int(v) for v in shape[:3])
    ornt = nib.io_orientation(affine)
    canonical_shape = [0, 0, 0]
    for axis, (to, _) in enumerate(ornt):
        canonical_shape[int(to)] = shape[axis]
    canonical_affine = np.asarray(affine, dtype=np.float64) @ nib.orientations.inv_ornt_aff(ornt, shape)
    return tuple(canonical_shape), canonical_affine


def load_label_map(path: Union[str, os.PathLike], info: ScanInfo) -> Tuple[np.ndarray, np.ndarray]:
    """Read a label map (one integer label per voxel) that belongs to the scan ``info`` was loaded from.

    The rule, the same for ``smocam explain``, ``compare`` and ``cohort``: the
    label map must be on the scan's own grid (the same voxel centres: equal
    shape and affine to 1e-3 mm after canonical re-orientation, so an LPS copy
    of an RAS map is fine), hold integer labels and at least one labelled
    (non-zero) voxel inside the model grid (``info.grid_affine``,
    ``info.grid_shape``), where the maps are defined. A warning is issued when
    less than half of the labelled voxels lie there.

    Args:
        path (str or Path): the label map (NIfTI).
        info (ScanInfo): from :func:`load_scan` of the scan.

    Returns:
        tuple: ``(labels, affine)``: the labels re-oriented to the closest
        canonical orientation (``int32``, ``X x Y x Z``) and their 4 x 4 affine,
        the grid onto which :func:`map_to_grid` brings a map for region tables.
        ``labels`` is a :class:`~captum_smocam.spatial.GridArray` that carries
        ``affine`` too, so that
        :func:`captum_smocam.regions.get_region_table` resamples a map onto
        it in world coordinates (given ``info=``) or refuses: never a silent
        voxel-by-voxel intersection of two different grids.

    Raises:
        FileNotFoundError: no file at ``path`` ("label map not found").
        ValueError: unreadable file; not 3-D; non-integer or non-finite
            values; another grid than the scan's (the message says whether the
            shapes or the affines differ, and whether the two overlap at all);
            no labelled voxel, or none inside the model grid.
    """
    path = Path(path)
    img = _read_image(path, "label map")
    shape = tuple(int(v) for v in img.shape)
    if len(shape) > 3 and all(v == 1 for v in shape[3:]):
        img = img.slicer[(slice(None),) * 3 + (0,) * (len(shape) - 3)]
    elif len(shape) != 3:
        raise ValueError(f"label map {path} must be 3-D; got shape {shape}")
    lab_shape, lab_affine = _canonical_grid(img.affine, img.shape)
    scan_shape, scan_affine = _canonical_grid(info.original_affine, info.original_spatial_shape)
    rule = "labels must be on the scan's grid: same shape and affine, e.g. resampled onto the scan with nearest-neighbour interpolation"
    if lab_shape != scan_shape:
        raise ValueError(f"label map {path} has shape {lab_shape}, the scan has {scan_shape} ({rule})")
    if not np.allclose(lab_affine, scan_affine, atol=1e-3):
        corners = np.array([[i, j, k, 1.0] for i in (0, lab_shape[0] - 1) for j in (0, lab_shape[1] - 1)
                            for k in (0, lab_shape[2] - 1)]).T
        apart = float(np.abs((lab_affine @ corners - scan_affine @ corners)[:3]).max())
        _, overlap = resample(np.ones(scan_shape, np.float32), scan_affine, lab_affine, lab_shape, order=0)
        where = ("and does not overlap the scan at all" if overlap == 0.0
                 else f"({100 * overlap:.0f}% of it overlaps the scan)")
        raise ValueError(
            f"label map {path} has the scan's shape {scan_shape} but another affine: its voxels lie up to "
            f"{apart:.1f} mm from the scan's {where} ({rule})"
        )
    try:
        data = np.asarray(nib.as_closest_canonical(img).dataobj)
    except Exception as exc:  # truncated/corrupt data blocks surface here
        raise ValueError(f"cannot read the data of label map {path}: {exc}") from exc
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
            raise ValueError(f"label map {path} holds non-integer or NaN values; expected integer labels")
    labels = data.astype(np.int32)
    labelled = labels != 0
    n_labelled = int(labelled.sum())
    if n_labelled == 0:
        raise ValueError(f"label map {path} has no labelled voxel (every value is 0)")
    inside, _ = resample(np.ones(info.grid_shape, np.float32), info.grid_affine, lab_affine, lab_shape, order=0)
    share = float(inside[labelled].sum()) / n_labelled
    if share == 0.0:
        raise ValueError(
            f"label map {path}: none of its {n_labelled} labelled voxels lies inside the model grid, where the "
            f"maps are defined; every region would get 0 attention"
        )
    if share < 0.5:
        warnings.warn(f"label map {path}: only {100 * share:.0f}% of its labelled voxels lie inside the model "
                      f"grid; regions outside it get 0 attention", DataWarning, stacklevel=2)
    return GridArray(labels, lab_affine), lab_affine


def _nifti_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in _NIFTI_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    raise ValueError(f"output path must end with .nii or .nii.gz; got {str(path)!r}")


def map_to_grid(
    attribution,
    info: ScanInfo,
    target_affine,
    target_shape,
    *,
    interpolation: str = "linear",
) -> np.ndarray:
    """A map on the model grid (or a layer's coarser grid) resampled onto any grid in world coordinates.

    The map is upsampled to ``info.grid_shape`` (trilinear, ``align_corners=False``) and then sampled at
    the voxel centres of the target grid (0 outside the model grid). :func:`save_map` uses it for the
    scan's own grid; region tables use it for a label map's grid.

    Args:
        attribution (numpy.ndarray or torch.Tensor): ``(X, Y, Z)``, ``(1, X, Y, Z)`` or ``(1, 1, X, Y, Z)``.
        info (ScanInfo): from :func:`load_scan`.
        target_affine (array-like): 4 x 4 voxel -> world affine of the target grid.
        target_shape (sequence of int): its spatial shape.
        interpolation (str, optional): ``"linear"`` or ``"nearest"``. Default: ``"linear"``

    Returns:
        numpy.ndarray: float32 of shape ``target_shape``.
    """
    if interpolation not in RESAMPLING_ORDERS:
        raise ValueError(
            f"interpolation must be one of {sorted(RESAMPLING_ORDERS)}; got {interpolation!r}"
        )
    vol = as_spatial_array(attribution, 3, what="attribution")
    vol = upsample_to(vol, info.grid_shape, mode=interpolation, what="attribution")
    vol = np.nan_to_num(vol, nan=0.0)
    out, _ = resample(
        vol, info.grid_affine, np.asarray(target_affine, dtype=float), tuple(int(v) for v in target_shape),
        order=RESAMPLING_ORDERS[interpolation],
    )
    return out


def save_map(
    attribution,
    info: ScanInfo,
    path: Union[str, os.PathLike],
    *,
    interpolation: str = "linear",
) -> Path:
    """Write a map onto the original scan's grid, so that it overlays the scan.

    The map (on the grid of the tensor returned by :func:`load_scan`, or at a
    layer's coarser resolution with the same axis order) is first upsampled to
    ``info.grid_shape`` (``torch.nn.functional.interpolate``, trilinear,
    ``align_corners=False``, as Captum's ``LayerAttribution.interpolate``),
    then resampled in world coordinates onto the original image's voxel grid
    and affine (0 outside the model grid). The file is written under a
    temporary name in the same folder and renamed with ``os.replace``, so an
    error never leaves a half-written file (nor clobbers an existing one).

    Args:
        attribution (numpy.ndarray or torch.Tensor): map of shape
            ``(X, Y, Z)``, ``(1, X, Y, Z)`` or ``(1, 1, X, Y, Z)``.
        info (ScanInfo): from :func:`load_scan`.
        path (str or Path): output ``.nii`` or ``.nii.gz`` file.
        interpolation (str, optional): ``"linear"`` for continuous maps,
            ``"nearest"`` for label/mask volumes. Default: ``"linear"``

    Returns:
        pathlib.Path: ``path``.

    Examples::

        >>> import nibabel as nib, numpy as np, tempfile, os
        >>> img = nib.Nifti1Image(np.random.rand(20, 24, 18).astype("float32"), np.diag([-2., 2., 2., 1.]))
        >>> x, info = load_scan(img)
        >>> out = save_map(x[0, 0, ::2, ::2, ::2], info, os.path.join(tempfile.mkdtemp(), "map.nii.gz"))
        >>> nib.load(out).shape
        (20, 24, 18)
    """
    if not isinstance(info, ScanInfo):
        raise TypeError(f"info must be the ScanInfo returned by load_scan; got {type(info).__name__}")
    if interpolation not in RESAMPLING_ORDERS:
        raise ValueError(
            f"interpolation must be one of {sorted(RESAMPLING_ORDERS)}; got {interpolation!r}"
        )
    path = Path(path)
    suffix = _nifti_suffix(path)
    out = map_to_grid(attribution, info, info.original_affine, info.original_spatial_shape,
                      interpolation=interpolation)
    img = nib.Nifti1Image(out, info.original_affine)
    img.set_data_dtype(np.float32)
    hdr = info.original_header
    if isinstance(hdr, nib.Nifti1Header):
        qform, qcode = hdr.get_qform(coded=True)
        sform, scode = hdr.get_sform(coded=True)
        if qform is not None and int(qcode) > 0:
            img.set_qform(qform, int(qcode))
        if sform is not None and int(scode) > 0:
            img.set_sform(sform, int(scode))
        img.header.set_xyzt_units(*hdr.get_xyzt_units())
    with atomic_write(path, suffix=suffix) as tmp:
        nib.save(img, tmp)
    return path
