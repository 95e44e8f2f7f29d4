"""The template, its labels and the image grid: where each structure is before any deformation.

The 1 mm MNI152 2009 T1 template and its grey/white matter maps (read from the
nilearn wheel) are labelled once per process by the rules of
:func:`build_template_labels`; :func:`structure_label` and :func:`structure_mask`
name a structure's voxels; :func:`default_grid` is the grid every subject is
rendered on; :func:`plot_template_labels` draws the labels.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# --------------------------------------------------------------------------
# Structures
# --------------------------------------------------------------------------

#: Paired structures (base name, FreeSurferColorLUT colour of the analogous
#: FreeSurfer structure, standard deviation of the log volume factor).
_PAIRED = (
    ("lateral_ventricle", (120, 18, 134), 0.20),
    ("hippocampus", (220, 216, 20), 0.12),
    ("thalamus", (0, 118, 14), 0.12),
    ("caudate", (122, 186, 220), 0.12),
    ("putamen", (236, 13, 176), 0.12),
    ("cerebellum", (230, 148, 34), 0.10),
    ("cerebral_grey_matter", (205, 62, 78), 0.08),
    ("cerebral_white_matter", (245, 245, 245), 0.08),
)
_SIDES = ("left", "right")

#: Ordered names of the structures whose volumes are the regression targets.
STRUCTURE_NAMES: tuple = tuple(f"{side}_{base}" for base, _, _ in _PAIRED for side in _SIDES)
#: Label value -> structure name (0, background, is not included).
LABELS: dict = {i + 1: name for i, name in enumerate(STRUCTURE_NAMES)}
#: Label value -> (R, G, B) used by :func:`write_lut` and the figures.
LABEL_COLORS: dict = {
    i + 1: rgb for i, rgb in enumerate(rgb for _, rgb, _ in _PAIRED for _side in _SIDES)
}
#: Standard deviation of the log volume factor drawn for each structure.
VOLUME_LOG_SD: dict = {f"{side}_{base}": sd for base, _, sd in _PAIRED for side in _SIDES}
_NAME_TO_LABEL = {name: value for value, name in LABELS.items()}

#: Grid spacing in mm of the generated images.
DEFAULT_SPACING: float = 3.0

# Field of view (mm) and its centre (MNI mm): the template brain spans
# x -72..72, y -107..73, z -72..82; the field of view leaves room for a 8 %
# larger head plus local expansion.
_FOV_MM = (168.0, 204.0, 180.0)
_FOV_CENTRE = (0.0, -17.0, 5.0)


def structure_label(name: str) -> int:
    """The value of the structure ``name`` in the subjects' label maps.

    Examples::

        >>> structure_label("right_hippocampus")
        4
    """
    if name not in _NAME_TO_LABEL:
        raise ValueError(f"unknown structure {name!r}; expected one of {list(_NAME_TO_LABEL)}")
    return int(_NAME_TO_LABEL[name])


def structure_mask(subject, name: str) -> np.ndarray:
    """Boolean mask of the structure ``name`` on a subject's grid (``subject.labels == structure_label(name)``).

    Args:
        subject: a :class:`~captum_smocam.synth.Subject` (anything with ``labels``).
        name (str): a name of :data:`STRUCTURE_NAMES`.

    Examples::

        >>> from types import SimpleNamespace
        >>> s = SimpleNamespace(labels=np.array([0, 1, 2, 1]))
        >>> structure_mask(s, "left_lateral_ventricle")
        array([False,  True, False,  True])
    """
    return np.asarray(subject.labels) == structure_label(name)


# --------------------------------------------------------------------------
# Template and labels
# --------------------------------------------------------------------------


def _load_mni():
    """Load the 1 mm MNI152 2009 T1, GM and WM maps from the nilearn wheel."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1)
    wm = datasets.load_mni152_wm_template(resolution=1)
    return (
        np.asarray(t1.get_fdata(), dtype=np.float32),
        np.asarray(gm.get_fdata(), dtype=np.float32),
        np.asarray(wm.get_fdata(), dtype=np.float32),
        np.asarray(t1.affine, dtype=np.float64),
    )


def _mni_axes(shape, affine):
    """Sparse open grids of MNI x, y, z (mm) for an axis-aligned affine."""
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))):
        raise ValueError(f"expected an axis-aligned affine, got\n{affine}")
    axes = [affine[i, i] * np.arange(n) + affine[i, 3] for i, n in enumerate(shape)]
    return np.meshgrid(*axes, indexing="ij", sparse=True)


def build_template_labels(t1, gm, wm, affine) -> np.ndarray:
    """Label the template by rules on tissue maps inside MNI boxes.

    ``e = |x|`` is the distance from the midline; a voxel with ``x < 0`` is
    left, ``x > 0`` right, ``x = 0`` is left unlabelled. ``csf`` means inside
    the brain with ``gm < 0.5``, ``wm < 0.5`` and ``t1 < 0.5``. Rules, in
    order (a voxel keeps the first label it gets):

    1. lateral ventricle: the largest connected ``csf`` component inside
       ``e in [2, 32], y in [-50, 32], z in [-5, 32]``;
    2. hippocampus: ``gm > 0.6`` inside ``e in [18, 36], y in [-40, -8]`` and
       a band ``|z - zc(y)| <= 4`` along the long axis,
       ``zc(y) = -16 + 0.45 (-y - 20)`` (rises posteriorly);
    3. thalamus: ``gm > 0.5`` in ``e in [2, 20], y in [-34, -6], z in [-2, 16]``;
    4. caudate: ``gm > 0.6`` in ``e in [7, 22], y in [-12, 26], z in [-2, 24]``;
    5. putamen: ``gm > 0.5`` in ``e in [17, 32], y in [-18, 20], z in [-8, 14]``;
    6. cerebellum: brain tissue (``gm + wm > 0.5``) with ``y <= -36`` below
       the tentorium, a tent highest at the midline and anteriorly,
       ``z <= -2 - 0.4 e - 0.2 max(-45 - y, 0)``, outside the peduncles and
       brainstem ``e < 12, y > -48``;
    7. cerebral grey matter: ``gm >= wm``, ``gm + wm > 0.5``, not in the
       posterior fossa (``y <= -36`` below the tentorium) nor in the
       brainstem box ``e < 14, y in [-52, -8], z < -6``;
    8. cerebral white matter: ``wm > gm``, ``gm + wm > 0.5``, same exclusion.

    Args:
        t1 (numpy.ndarray): template T1 in ``[0, 1]``, shape ``X x Y x Z``,
            0 outside the brain.
        gm (numpy.ndarray): grey-matter probability, same shape.
        wm (numpy.ndarray): white-matter probability, same shape.
        affine (numpy.ndarray): 4 x 4 axis-aligned voxel -> MNI mm affine.

    Returns:
        numpy.ndarray: ``int16`` label map, values in :data:`LABELS` or 0.

    Examples::

        >>> _atlas().labels.shape
        (197, 233, 189)
    """
    t1, gm, wm = (np.asarray(a, dtype=np.float32) for a in (t1, gm, wm))
    if not (t1.shape == gm.shape == wm.shape) or t1.ndim != 3:
        raise ValueError(f"expected three 3-D maps of one shape, got {t1.shape}, {gm.shape}, {wm.shape}")
    x, y, z = _mni_axes(t1.shape, np.asarray(affine, dtype=np.float64))
    e = np.abs(x)
    brain = t1 > 0
    csf = brain & (gm < 0.5) & (wm < 0.5) & (t1 < 0.5)
    tissue = brain & (gm + wm > 0.5)

    def box(er, yr, zr):
        return (e >= er[0]) & (e <= er[1]) & (y >= yr[0]) & (y <= yr[1]) & (z >= zr[0]) & (z <= zr[1])

    out = np.zeros(t1.shape, dtype=np.int16)

    def assign(base, mask):
        for side, sel in (("left", x < 0), ("right", x > 0)):
            m = mask & sel & (out == 0)
            out[m] = _NAME_TO_LABEL[f"{side}_{base}"]

    # 1. Lateral ventricles: largest CSF component per side inside the box.
    vbox = box((2, 32), (-50, 32), (-5, 32)) & csf
    for side, sel in (("left", x < 0), ("right", x > 0)):
        comp, n = ndimage.label(vbox & sel)
        if n == 0:
            raise ValueError("no ventricle found: the template does not look like MNI152")
        sizes = ndimage.sum_labels(np.ones_like(comp), comp, index=np.arange(1, n + 1))
        out[comp == 1 + int(np.argmax(sizes))] = _NAME_TO_LABEL[f"{side}_lateral_ventricle"]
    # 2-5. Deep grey structures.
    zc = -16.0 + 0.45 * (-y - 20.0)
    assign("hippocampus", box((18, 36), (-40, -8), (-40, 20)) & (np.abs(z - zc) <= 4) & (gm > 0.6))
    assign("thalamus", box((2, 20), (-34, -6), (-2, 16)) & (gm > 0.5))
    assign("caudate", box((7, 22), (-12, 26), (-2, 24)) & (gm > 0.6))
    assign("putamen", box((17, 32), (-18, 20), (-8, 14)) & (gm > 0.5))
    # 6. Cerebellum below the tentorium, outside the brainstem.
    fossa = (y <= -36) & (z <= -2.0 - 0.4 * e - 0.2 * np.maximum(-45.0 - y, 0.0))
    assign("cerebellum", tissue & fossa & ~((e < 12) & (y > -48)))
    # 7-8. Cerebral tissue outside the posterior fossa and the brainstem.
    cerebral = tissue & ~fossa & ~((e < 14) & (y >= -52) & (y <= -8) & (z < -6))
    assign("cerebral_grey_matter", cerebral & (gm >= wm))
    assign("cerebral_white_matter", cerebral & (wm > gm))
    return out


@dataclass
class _Atlas:
    t1: np.ndarray  # 1 mm template, [0, 1]
    labels: np.ndarray  # int16
    affine: np.ndarray  # 1 mm voxel -> MNI
    volumes: dict  # cm3, from label voxel counts


@functools.lru_cache(maxsize=1)
def _atlas() -> _Atlas:
    t1, gm, wm, affine = _load_mni()
    labels = build_template_labels(t1, gm, wm, affine)
    vox_cm3 = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=len(LABELS) + 1)
    volumes = {name: float(counts[v] * vox_cm3) for v, name in LABELS.items()}
    return _Atlas(t1=t1, labels=labels, affine=affine, volumes=volumes)


def template_volumes() -> dict:
    """Volumes (cm³) of the template labels: voxel count x 1 mm³.

    Returns:
        dict: structure name -> cm³, for every name in :data:`STRUCTURE_NAMES`.

    Examples::

        >>> v = template_volumes()
        >>> 2.0 < v["left_hippocampus"] < 6.0
        True
    """
    return dict(_atlas().volumes)


# --------------------------------------------------------------------------
# Grid
# --------------------------------------------------------------------------


def _check_spacing(spacing) -> float:
    if isinstance(spacing, bool) or not isinstance(spacing, (int, float, np.integer, np.floating)):
        raise TypeError(f"spacing must be a number of mm, got {spacing!r}")
    spacing = float(spacing)
    if not (math.isfinite(spacing) and 0.5 <= spacing <= 24.0):
        raise ValueError(f"spacing must be between 0.5 and 24 mm, got {spacing!r}")
    return spacing


def default_grid(spacing: float = DEFAULT_SPACING):
    """The image grid shared by all subjects: isotropic, cropped to the head.

    The field of view is 168 x 204 x 180 mm centred on MNI (0, -17, 5); the
    shape is that divided by ``spacing`` (rounded), the voxel centres are
    symmetric about the midline ``x = 0``.

    Args:
        spacing (float, optional): voxel size in mm. Default: 3.0 (56 x 68 x 60).

    Returns:
        tuple: ``(shape, affine)`` with ``shape`` a tuple of three ints and
        ``affine`` the 4 x 4 ``float64`` voxel -> MNI mm matrix.

    Examples::

        >>> shape, affine = default_grid()
        >>> shape
        (56, 68, 60)
        >>> affine[:3, 3].tolist()
        [-82.5, -117.5, -83.5]
    """
    spacing = _check_spacing(spacing)
    shape = tuple(max(2, int(round(f / spacing))) for f in _FOV_MM)
    affine = np.eye(4)
    for i, (n, c) in enumerate(zip(shape, _FOV_CENTRE)):
        affine[i, i] = spacing
        affine[i, 3] = c - (n - 1) / 2.0 * spacing
    return shape, affine

def plot_template_labels(cut_coords=(-22.0, -20.0, 8.0), output_file=None, title=None):
    """Draw the template labels over the 1 mm template (sagittal, coronal, axial).

    Args:
        cut_coords (tuple of float, optional): MNI ``(x, y, z)`` of the
            sagittal, coronal and axial cuts. Default: (-22, -20, 8)
        output_file (str, optional): save the figure there (atomically), then close it. Default: None
        title (str, optional): figure title. Default: None

    Returns:
        matplotlib.figure.Figure: the figure (never shown).

    Examples::

        >>> fig = plot_template_labels()
        >>> len(fig.axes)
        3
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    atlas = _atlas()
    inv = np.linalg.inv(atlas.affine)
    ijk = [int(round(c)) for c in inv[:3, :3] @ np.asarray(cut_coords, float) + inv[:3, 3]]
    colors = np.zeros((len(LABELS) + 1, 4))
    for v, rgb in LABEL_COLORS.items():
        colors[v, :3] = np.asarray(rgb) / 255.0
        colors[v, 3] = 0.55
    # White matter drawn as a light blue so it is visible on the template.
    for name in ("left_cerebral_white_matter", "right_cerebral_white_matter"):
        colors[_NAME_TO_LABEL[name]] = (0.4, 0.6, 1.0, 0.25)
    cmap = ListedColormap(colors)
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.5))
    a = atlas.affine
    ext = [(a[i, 3] - 0.5, a[i, 3] + atlas.t1.shape[i] - 0.5) for i in range(3)]
    views = [
        ("sagittal", 0, (1, 2), f"x = {cut_coords[0]:g}"),
        ("coronal", 1, (0, 2), f"y = {cut_coords[1]:g}"),
        ("axial", 2, (0, 1), f"z = {cut_coords[2]:g}"),
    ]
    for ax, (_, axis, (h, v), label) in zip(axes, views):
        t1 = np.take(atlas.t1, ijk[axis], axis=axis).T
        lab = np.take(atlas.labels, ijk[axis], axis=axis).T
        extent = [*ext[h], *ext[v]]
        ax.imshow(t1, cmap="gray", origin="lower", extent=extent, vmin=0, vmax=1)
        ax.imshow(lab, cmap=cmap, origin="lower", extent=extent, vmin=0, vmax=len(LABELS), interpolation="nearest")
        ax.set_title(label)
        ax.set_xlabel("xyz"[h] + " (mm)")
        ax.set_ylabel("xyz"[v] + " (mm)")
    handles = [
        Patch(color=np.asarray(LABEL_COLORS[_NAME_TO_LABEL[f"left_{b}"]]) / 255.0, label=b.replace("_", " "))
        for b, _, _ in _PAIRED
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False)
    fig.suptitle(title or "Template labels on the MNI152 2009 T1 (neurological view: left, x < 0, on the left)")
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    if output_file is not None:
        from .._io import save_figure

        save_figure(fig, output_file, dpi=80)
    return fig
