"""Standard grids and label codes: FSL's MNI152 1 mm / 2 mm grids and FreeSurfer's aseg codes.

The synthetic subjects are rendered on :func:`~captum_smocam.synth.default_grid`
(RAS, cropped to the head). Users share scans on FSL's MNI152 grids
(``MNI152_T1_1mm``: 182 x 218 x 182, ``MNI152_T1_2mm``: 91 x 109 x 91, both
LAS: the x axis runs from right to left) and label them with FreeSurfer's
``aseg`` codes (17/53 the hippocampi, ...). :func:`to_standard` carries a
subject onto such a grid (world coordinates: the image linearly, the labels
by nearest neighbour) and :func:`freesurfer_codes` re-codes its labels.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from .anatomy import LABEL_COLORS, LABELS, STRUCTURE_NAMES

__all__ = ["MNI_GRIDS", "GRIDS", "FREESURFER_ASEG", "LABEL_CODES", "standard_grid", "grid_spacing",
           "freesurfer_codes", "label_table", "to_standard"]

#: FSL's MNI152 grids: name -> (shape, voxel -> MNI mm affine) of ``MNI152_T1_1mm`` / ``MNI152_T1_2mm``.
MNI_GRIDS: Dict[str, Tuple[Tuple[int, int, int], np.ndarray]] = {
    "mni1mm": ((182, 218, 182), np.array([[-1.0, 0, 0, 90], [0, 1.0, 0, -126], [0, 0, 1.0, -72], [0, 0, 0, 1]])),
    "mni2mm": ((91, 109, 91), np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])),
}

#: Values of ``grid`` (``smocam synth --grid``): ``"native"`` is :func:`default_grid` at ``spacing``.
GRIDS = ("native", *MNI_GRIDS)

#: Structure name -> (FreeSurfer aseg code, FreeSurferColorLUT name) of the analogous FreeSurfer structure.
FREESURFER_ASEG: Dict[str, Tuple[int, str]] = {
    "left_lateral_ventricle": (4, "Left-Lateral-Ventricle"),
    "right_lateral_ventricle": (43, "Right-Lateral-Ventricle"),
    "left_hippocampus": (17, "Left-Hippocampus"),
    "right_hippocampus": (53, "Right-Hippocampus"),
    "left_thalamus": (10, "Left-Thalamus"),
    "right_thalamus": (49, "Right-Thalamus"),
    "left_caudate": (11, "Left-Caudate"),
    "right_caudate": (50, "Right-Caudate"),
    "left_putamen": (12, "Left-Putamen"),
    "right_putamen": (51, "Right-Putamen"),
    "left_cerebellum": (8, "Left-Cerebellum-Cortex"),
    "right_cerebellum": (47, "Right-Cerebellum-Cortex"),
    "left_cerebral_grey_matter": (3, "Left-Cerebral-Cortex"),
    "right_cerebral_grey_matter": (42, "Right-Cerebral-Cortex"),
    "left_cerebral_white_matter": (2, "Left-Cerebral-White-Matter"),
    "right_cerebral_white_matter": (41, "Right-Cerebral-White-Matter"),
}

#: Values of ``label_codes`` (``smocam synth --label-codes``).
LABEL_CODES = ("synth", "freesurfer")


def standard_grid(name: str) -> Tuple[Tuple[int, int, int], np.ndarray]:
    """``(shape, affine)`` of a grid of :data:`MNI_GRIDS`.

    Examples::

        >>> shape, affine = standard_grid("mni2mm")
        >>> shape, affine[0].tolist()
        ((91, 109, 91), [-2.0, 0.0, 0.0, 90.0])
    """
    if name not in MNI_GRIDS:
        raise ValueError(f"unknown grid {name!r}; expected one of {GRIDS}")
    shape, affine = MNI_GRIDS[name]
    return shape, affine.copy()


def grid_spacing(name: str) -> float:
    """The voxel size (mm) of a grid of :data:`MNI_GRIDS`: the spacing subjects are rendered at for it."""
    return float(abs(standard_grid(name)[1][0, 0]))


def freesurfer_codes(labels: np.ndarray) -> np.ndarray:
    """Synthetic label values (:data:`LABELS`, 1-16) re-coded as FreeSurfer aseg codes (``int16``).

    Examples::

        >>> freesurfer_codes(np.array([0, 3, 4])).tolist()  # background, left / right hippocampus
        [0, 17, 53]
    """
    table = np.zeros(max(LABELS) + 1, dtype=np.int16)
    for value, name in LABELS.items():
        table[value] = FREESURFER_ASEG[name][0]
    labels = np.asarray(labels)
    return table[labels.astype(np.intp)]


def label_table(label_codes: str = "synth") -> Tuple[Dict[int, str], Dict[int, Tuple[int, int, int]]]:
    """``(names, colours)`` of the label values written with ``label_codes``, for :func:`write_lut`.

    ``"synth"``: values 1-16 named after :data:`STRUCTURE_NAMES`; ``"freesurfer"``:
    aseg codes named as in ``FreeSurferColorLUT.txt`` (``17 Left-Hippocampus``).
    """
    if label_codes not in LABEL_CODES:
        raise ValueError(f"label_codes must be one of {LABEL_CODES}, got {label_codes!r}")
    if label_codes == "synth":
        return dict(LABELS), dict(LABEL_COLORS)
    names, colours = {}, {}
    for value, name in LABELS.items():
        code, fs_name = FREESURFER_ASEG[name]
        names[code], colours[code] = fs_name, LABEL_COLORS[value]
    return names, colours


def to_standard(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, grid: str):
    """A subject's image and labels resampled in world coordinates onto a grid of :data:`MNI_GRIDS`.

    Returns:
        tuple: ``(image float32, labels int16, affine)`` on the grid (0 outside the subject's field of view).
    """
    from ..spatial import resample

    shape, target = standard_grid(grid)
    img, _ = resample(image, affine, target, shape, order=1)
    lab, _ = resample(labels.astype(np.float32), affine, target, shape, order=0)
    return img.astype(np.float32), np.rint(lab).astype(np.int16), target


assert set(FREESURFER_ASEG) == set(STRUCTURE_NAMES)
