"""A synthetic T1 cohort with known anatomy and exact volumes.

Every subject is the MNI152 2009 T1 template (shipped inside nilearn, read
from disk) pushed through a smooth invertible deformation ``phi`` drawn from
the subject's own random generator, then given a bias field, noise and a
contrast change. Because ``phi`` is known in closed form, the volume of every
labelled structure is known exactly: it is the integral of the Jacobian
determinant ``det D phi`` over the structure's template label.

Pipeline of :func:`generate_subject`::

    seed (cohort_seed, index) -> draws (scale s, log volume factors z_k,
                                        elastic waves, intensity params)
    z_k -> bump amplitudes a_k (solved so that each structure changes by
           exp(z_k) on top of s^3)
    phi(x) = c0 + s * (x - c0 + sum_k a_k w_k(x) (x - c_k) + u_elastic(x))
    volumes_k = s^3 * integral over label k of det(I + Du(x)) dx      (exact)
    image(y)  = intensity(template(phi^-1(y))), labels(y) = label(phi^-1(y))

The label map is built once per process from the template and its grey/white
matter probability maps by the rules in :func:`build_template_labels`
(tissue probabilities and intensities inside MNI boxes, split at ``x = 0``).
See ``docs/synthetic-data.md`` for the rules, the figure and measured numbers.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
from scipy import ndimage

__all__ = [
    "STRUCTURE_NAMES",
    "LABELS",
    "LABEL_COLORS",
    "DEFAULT_SPACING",
    "DEFAULT_LR_CORRELATION",
    "VOLUME_LOG_SD",
    "Subject",
    "default_grid",
    "template",
    "template_volumes",
    "build_template_labels",
    "generate_subject",
    "generate_cohort",
    "volumes_table",
    "write_lut",
    "write_subject",
    "write_cohort",
    "plot_template_labels",
]

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
#: Correlation between the left and right log volume factors of a pair.
DEFAULT_LR_CORRELATION: float = 0.95

# Field of view (mm) and its centre (MNI mm): the template brain spans
# x -72..72, y -107..73, z -72..82; the field of view leaves room for a 8 %
# larger head plus local expansion.
_FOV_MM = (168.0, 204.0, 180.0)
_FOV_CENTRE = (0.0, -17.0, 5.0)
# Centre of the global scaling (MNI mm): the centre of the brain's bounding box.
_SCALE_CENTRE = np.array([0.0, -17.0, 5.0])

# Random draws.
_GLOBAL_LOG_SCALE_SD = 0.03  # linear scale s = exp(N(0, sd)); volumes x s^3
_GLOBAL_LOG_SCALE_MAX = 0.08
_LOG_FACTOR_CLIP = 2.5  # draws clipped at +-2.5 sd
_OVERRIDE_RANGE = (0.5, 2.0)
_N_WAVES = 3  # elastic field: random plane waves per component
_WAVE_AMPLITUDE_MM = 0.8
_WAVELENGTH_MM = (60.0, 140.0)
_NEWTON_STEPS = 2
_WARP_ITERATIONS = 6
# A grid voxel farther than this from the template brain stays background:
# |phi^-1(y) - y| <= 110 mm * 0.08 (scale) + a few mm (local) < 16 mm.
_ACTIVE_MARGIN_MM = 16.0
_MIN_JACOBIAN = 0.25  # floor of det(I + Du) at the cells

# Bumps (deep structures, cerebellum): u = a g(rho) (x - c) with rho the
# ellipsoidal radius (the ellipsoid rho <= 1 holds _BUMP_QUANTILE % of the
# structure). div u = a q(rho) with q = 3 for rho < 1 - _BUMP_SHELL, a smooth
# fall to 0 at rho = 1 + _BUMP_SHELL, and q = 0 further out: outside the
# shell the bump only pushes its neighbours (like the field of a uniformly
# expanding ball, g ~ rho^-3), it does not compress them. A smooth cut-off
# between rho = _BUMP_CUT and _BUMP_CUT + 1 makes the support compact.
_BUMP_QUANTILE = 95.0
_BUMP_SHELL = 0.25
_BUMP_CUT = 2.0
# Cerebral tissues deform by the gradient of a potential instead of a bump.
_POTENTIAL_STRUCTURES = ("cerebral_grey_matter", "cerebral_white_matter")
_POTENTIAL_SMOOTH_MM = 2.0


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

        >>> from captum_smocam.synth import _atlas
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


# --------------------------------------------------------------------------
# Deformation: bumps and elastic waves
# --------------------------------------------------------------------------


def _smoothstep(t):
    """C2 step 0 -> 1 on [0, 1] and its derivative."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * t * (t * (6 * t - 15) + 10), 30 * t * t * (t - 1) ** 2


def _bump_geometry():
    """Per structure: side sign, centre (mm) and ellipsoid radii (mm)."""
    atlas = _atlas()
    geo = []
    for value, name in LABELS.items():
        idx = np.argwhere(atlas.labels == value).astype(np.float64)
        pts = idx @ atlas.affine[:3, :3].T + atlas.affine[:3, 3]
        centre = pts.mean(0)
        sd = pts.std(0) + 1e-6
        q = np.percentile(np.sqrt((((pts - centre) / sd) ** 2).sum(1)), _BUMP_QUANTILE)
        geo.append((-1.0 if name.startswith("left_") else 1.0, centre, q * sd))
    return geo


@functools.lru_cache(maxsize=1)
def _bump_profile():
    """Tables of the bump profile ``g(rho)`` and ``g'(rho)`` (see _BUMP_SHELL)."""
    r = np.linspace(0.0, _BUMP_CUT + 1.0, 60001)
    q = 3.0 * (1.0 - _smoothstep((r - (1.0 - _BUMP_SHELL)) / (2.0 * _BUMP_SHELL))[0])
    integrand = q * r * r
    m = np.concatenate([[0.0], np.cumsum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(r))])
    g = np.ones_like(r)
    g[1:] = m[1:] / r[1:] ** 3
    g *= 1.0 - _smoothstep(r - _BUMP_CUT)[0]
    return r, g, np.gradient(g, r)


def _bump_terms(points, centre, radii, want_jacobian):
    """Terms of the bump ``u = a g(rho) d`` at ``points`` (N x 3), ``d = x - c``.

    Returns the indices of the points in the support, ``V = g d`` (3 x n)
    and, if asked, ``B = g I + d grad(g)^T`` (3 x 3 x n), so that
    ``Du = a B``.
    """
    d = points - centre
    rho = np.sqrt(((d / radii) ** 2).sum(1))
    idx = np.nonzero(rho < _BUMP_CUT + 1.0)[0]
    d, rho = d[idx], rho[idx]
    r, g_tab, dg_tab = _bump_profile()
    g = np.interp(rho, r, g_tab)
    V = (g * d.T).astype(np.float32)
    if not want_jacobian:
        return idx, V, None
    dg = np.interp(rho, r, dg_tab)
    grad = (dg / np.where(rho > 0, rho, 1.0))[:, None] * d / radii**2
    B = d.T[:, None, :] * grad.T[None, :, :]
    B[0, 0] += g
    B[1, 1] += g
    B[2, 2] += g
    return idx, V, B.astype(np.float32)


@dataclass
class _Blocks:
    """2 mm blocks of the 1 mm template (the 'cells' where Jacobians are integrated)."""

    shape: tuple  # block grid shape
    affine: np.ndarray  # block grid voxel -> MNI mm
    flat: np.ndarray  # flat block index of each cell (blocks holding a label)
    points: np.ndarray  # n x 3 mm, cell centres
    counts: np.ndarray  # n x L float32, 1 mm voxels of each label in the cell
    brain: np.ndarray  # block grid, fraction of brain voxels


@functools.lru_cache(maxsize=1)
def _blocks() -> _Blocks:
    atlas = _atlas()
    lab = atlas.labels
    bshape = tuple((n + 1) // 2 for n in lab.shape)
    ijk = np.nonzero(lab)
    block = np.ravel_multi_index(tuple(a // 2 for a in ijk), bshape)
    ublock, inv = np.unique(block, return_inverse=True)
    counts = np.zeros((ublock.size, len(LABELS)), dtype=np.float32)
    np.add.at(counts, (inv, lab[ijk].astype(np.int64) - 1), 1.0)
    baffine = atlas.affine.copy()
    baffine[:3, :3] *= 2.0
    baffine[:3, 3] += atlas.affine[:3, :3] @ np.full(3, 0.5)
    bijk = np.stack(np.unravel_index(ublock, bshape), 1).astype(np.float64)
    points = bijk @ baffine[:3, :3].T + baffine[:3, 3]
    bi = np.nonzero(atlas.t1 > 0)
    brain = np.bincount(
        np.ravel_multi_index(tuple(a // 2 for a in bi), bshape), minlength=int(np.prod(bshape))
    ).reshape(bshape) / 8.0
    return _Blocks(bshape, baffine, ublock, points, counts, brain)


@functools.lru_cache(maxsize=1)
def _potentials() -> dict:
    """Gradient and Hessian of the tissue potentials (cerebral GM, WM).

    For a tissue ``k`` (fraction ``f_k`` per 2 mm block, smoothed with a
    2 mm Gaussian), solve ``laplacian(psi_k) = f_k - c_k * background``
    by FFT, ``c_k`` making the right-hand side sum to zero. The displacement
    ``u = b_k grad(psi_k)`` then has divergence ``b_k`` inside the tissue,
    0 in all other tissue, and the compensating shrinkage falls outside the
    brain: the tissue grows or shrinks while its neighbours are only moved.
    """
    from scipy import fft

    blk = _blocks()
    pad = tuple(fft.next_fast_len(n + 32, real=True) for n in blk.shape)
    step = blk.affine[0, 0]
    k = np.meshgrid(
        *[2 * np.pi * fft.fftfreq(n, d=step) for n in pad[:-1]],
        2 * np.pi * fft.rfftfreq(pad[-1], d=step),
        indexing="ij",
        sparse=True,
    )
    k2 = k[0] ** 2 + k[1] ** 2 + k[2] ** 2
    smooth = np.exp(-0.5 * k2 * _POTENTIAL_SMOOTH_MM**2)
    green = np.where(k2 > 0, -1.0 / np.where(k2 > 0, k2, 1.0), 0.0) * smooth
    background = np.ones(pad)
    background[tuple(slice(0, n) for n in blk.shape)] -= blk.brain
    out = {}
    for name in STRUCTURE_NAMES:
        if not name.endswith(_POTENTIAL_STRUCTURES):
            continue
        j = STRUCTURE_NAMES.index(name)
        src = np.zeros(pad)
        src.ravel()[np.ravel_multi_index(np.unravel_index(blk.flat, blk.shape), pad)] = blk.counts[:, j] / 8.0
        src -= background * (src.sum() / background.sum())
        psi_hat = fft.rfftn(src, workers=1) * green
        crop = tuple(slice(0, n) for n in blk.shape)
        grad = np.stack([fft.irfftn(1j * k[i] * psi_hat, pad, workers=1)[crop] for i in range(3)]).astype(np.float32)
        hess = np.zeros((3, 3) + blk.shape, dtype=np.float32)
        for a in range(3):
            for b in range(a, 3):
                hess[a, b] = hess[b, a] = fft.irfftn(-k[a] * k[b] * psi_hat, pad, workers=1)[crop]
        out[name] = (grad, hess)
    return out


@dataclass
class _Cells:
    """Cells with the per-structure Jacobian terms."""

    points: np.ndarray  # n x 3 mm, cell centres
    counts: np.ndarray  # n x L float32, 1 mm voxels of each label in the cell
    terms: list  # per structure (idx, B): Du = sum_k a_k B_k at cells idx
    sensitivity: np.ndarray  # L x L: d log(volume_k) / d a_j at a = 0


@functools.lru_cache(maxsize=1)
def _cells() -> _Cells:
    blk = _blocks()
    pots = _potentials()
    n_lab = len(LABELS)
    terms, sens = [], np.zeros((n_lab, n_lab))
    v0 = blk.counts.sum(0).astype(np.float64)
    cell_ijk = np.unravel_index(blk.flat, blk.shape)
    for j, (side, centre, radii) in enumerate(_bump_geometry()):
        name = STRUCTURE_NAMES[j]
        if name in pots:
            idx = slice(None)
            B = np.ascontiguousarray(pots[name][1][(slice(None), slice(None)) + cell_ijk])
        else:
            idx, _, B = _bump_terms(blk.points, centre, radii, True)
        terms.append((idx, B))
        tr = (B[0, 0] + B[1, 1] + B[2, 2]).astype(np.float64)
        sens[:, j] = blk.counts[idx].astype(np.float64).T @ tr / v0
    return _Cells(points=blk.points.astype(np.float32), counts=blk.counts, terms=terms, sensitivity=sens)


@dataclass
class _GridCache:
    shape: tuple
    affine: np.ndarray
    points: np.ndarray  # N x 3 mm (all grid voxels, C order)
    active: np.ndarray  # indices of voxels within _ACTIVE_MARGIN_MM of the brain
    bumps: list  # per structure (idx, V)
    t1: np.ndarray  # template smoothed for this spacing


@functools.lru_cache(maxsize=4)
def _grid_cache(spacing: float) -> _GridCache:
    shape, affine = default_grid(spacing)
    x, y, z = (a.ravel() for a in _mni_axes(shape, affine))
    points = np.stack(np.meshgrid(x, y, z, indexing="ij"), -1).reshape(-1, 3)
    bumps = []
    pots = _potentials()
    blk = _blocks()
    inv = np.linalg.inv(blk.affine)
    bcoords = (points @ inv[:3, :3].T + inv[:3, 3]).T
    for name, (side, centre, radii) in zip(STRUCTURE_NAMES, _bump_geometry()):
        if name in pots:
            V = np.stack([ndimage.map_coordinates(g, bcoords, order=1, mode="nearest") for g in pots[name][0]])
            bumps.append((slice(None), V.astype(np.float32)))
        else:
            idx, V, _ = _bump_terms(points, centre, radii, False)
            bumps.append((idx, V))
    # Anti-aliasing: blur the 1 mm template to about the target voxel size.
    sigma = math.sqrt(max(spacing**2 - 1.0, 0.0)) / 2.355
    t1 = _atlas().t1
    t1 = ndimage.gaussian_filter(t1, sigma, truncate=3.0) if sigma > 0 else t1
    near = ndimage.binary_dilation(blk.brain > 0, iterations=int(math.ceil(_ACTIVE_MARGIN_MM / blk.affine[0, 0])))
    active = np.nonzero(ndimage.map_coordinates(near.astype(np.float32), bcoords, order=0, mode="constant") > 0)[0]
    return _GridCache(shape, affine, points.astype(np.float32), active, bumps, t1.astype(np.float32))


def _elastic(points, waves, jacobian):
    """Elastic displacement (3 x n) or its Jacobian (3 x 3 x n) at points.

    ``u_i(x) = sum_m A_im sin(k_m . x + p_im)`` (plane waves).
    """
    k, amp, phase = waves  # (M, 3), (3, M), (3, M)
    theta = points @ k.T  # n x M
    n = points.shape[0]
    if not jacobian:
        out = np.zeros((3, n))
        for i in range(3):
            for m in range(k.shape[0]):
                out[i] += amp[i, m] * np.sin(theta[:, m] + phase[i, m])
        return out
    out = np.zeros((3, 3, n), dtype=np.float32)
    for i in range(3):
        for m in range(k.shape[0]):
            c = np.cos(theta[:, m] + phase[i, m]).astype(np.float32)
            for j in range(3):
                out[i, j] += np.float32(amp[i, m] * k[m, j]) * c
    return out


def _displacement(points, amplitudes, waves):
    """``u(x)`` (3 x n) at template points (n x 3 mm), evaluated directly.

    The forward map is ``phi(x) = c0 + s (x - c0 + u(x))``; :func:`_warp`
    inverts it with ``u`` interpolated from the grid, this function is the
    reference used to check that inverse.
    """
    points = np.asarray(points, dtype=np.float64)
    u = np.zeros((3, points.shape[0]))
    pots = _potentials()
    blk = _blocks()
    inv = np.linalg.inv(blk.affine)
    bcoords = (points @ inv[:3, :3].T + inv[:3, 3]).T
    for a, name, (_, centre, radii) in zip(amplitudes, STRUCTURE_NAMES, _bump_geometry()):
        if name in pots:
            u += a * np.stack([ndimage.map_coordinates(g, bcoords, order=1, mode="nearest") for g in pots[name][0]])
        else:
            idx, V, _ = _bump_terms(points, centre, radii, False)
            u[:, idx] += a * V
    if waves is not None:
        u += _elastic(points, waves, False)
    return u


def _det3(J):
    return (
        J[0, 0] * (J[1, 1] * J[2, 2] - J[1, 2] * J[2, 1])
        - J[0, 1] * (J[1, 0] * J[2, 2] - J[1, 2] * J[2, 0])
        + J[0, 2] * (J[1, 0] * J[2, 1] - J[1, 1] * J[2, 0])
    )


def _local_jacobian(cells, amplitudes, elastic_jac):
    """det(I + Du) at the cells for given bump amplitudes."""
    if elastic_jac is not None:
        J = elastic_jac.astype(np.float32, copy=True)
    else:
        J = np.zeros((3, 3, cells.points.shape[0]), dtype=np.float32)
    for a, (idx, B) in zip(amplitudes, cells.terms):
        if a != 0.0:
            J[:, :, idx] += np.float32(a) * B
    J[0, 0] += 1.0
    J[1, 1] += 1.0
    J[2, 2] += 1.0
    return _det3(J).astype(np.float64)


def _exact_volumes(scale, local_det) -> dict:
    """Volumes (cm³): ``scale**3 * sum over cells of count_k * det(I + Du)``."""
    vol = scale**3 * (_cells().counts.T.astype(np.float64) @ local_det) / 1000.0
    return {name: float(v) for name, v in zip(STRUCTURE_NAMES, vol)}


def _solve_amplitudes(log_factors, elastic_jac):
    """Bump amplitudes giving each structure its log volume factor.

    A chord-Newton iteration on ``log(V_k(a) / V_k(0)) = z_k`` with the
    sensitivity matrix at ``a = 0``. Returns the amplitudes and det(I + Du)
    at the cells for the final amplitudes.
    """
    cells = _cells()
    v0 = cells.counts.sum(0).astype(np.float64)
    sinv = np.linalg.inv(cells.sensitivity)
    a = sinv @ log_factors
    for _ in range(_NEWTON_STEPS):
        det = _local_jacobian(cells, a, elastic_jac)
        achieved = np.log(np.maximum(cells.counts.T.astype(np.float64) @ det, 1e-9) / v0)
        a = a + sinv @ (log_factors - achieved)
    det = _local_jacobian(cells, a, elastic_jac)
    return a, det


# --------------------------------------------------------------------------
# Subjects
# --------------------------------------------------------------------------


@dataclass
class Subject:
    """One synthetic subject on the shared grid.

    Attributes:
        image (numpy.ndarray): ``float32`` T1-like intensities ``>= 0``, 0 in
            the background, shape = grid shape ``X x Y x Z``.
        labels (numpy.ndarray): ``int16`` label map, same shape, values in
            :data:`LABELS` or 0.
        affine (numpy.ndarray): 4 x 4 ``float64`` voxel -> MNI mm.
        volumes (dict): exact volume (cm³) of every structure in
            :data:`STRUCTURE_NAMES`, from the deformation.
        index (int): subject index (-1 for the template).
        params (dict): the random draws, for the record.
    """

    image: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    volumes: dict
    index: int
    params: dict = field(default_factory=dict)


def _check_int(name, value, minimum=0):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _check_correlation(r):
    if isinstance(r, bool) or not isinstance(r, (int, float, np.integer, np.floating)):
        raise TypeError(f"lr_correlation must be a number in [-1, 1], got {r!r}")
    r = float(r)
    if not (math.isfinite(r) and -1.0 <= r <= 1.0):
        raise ValueError(f"lr_correlation must be in [-1, 1], got {r!r}")
    return r


def _check_overrides(overrides):
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise TypeError(f"overrides must be a dict name -> volume factor, got {type(overrides).__name__}")
    out = {}
    for name, f in overrides.items():
        if name not in _NAME_TO_LABEL:
            raise ValueError(f"unknown structure {name!r} in overrides; expected one of {STRUCTURE_NAMES}")
        if isinstance(f, bool) or not isinstance(f, (int, float, np.integer, np.floating)):
            raise TypeError(f"override for {name!r} must be a number, got {f!r}")
        f = float(f)
        if not (math.isfinite(f) and _OVERRIDE_RANGE[0] <= f <= _OVERRIDE_RANGE[1]):
            raise ValueError(
                f"override for {name!r} must be a volume factor in {list(_OVERRIDE_RANGE)}, got {f!r}"
            )
        out[name] = f
    return out


def _draw(rng, lr_correlation):
    """All random draws of one subject, in a fixed order."""
    log_scale = float(np.clip(rng.normal(0.0, _GLOBAL_LOG_SCALE_SD), -_GLOBAL_LOG_SCALE_MAX, _GLOBAL_LOG_SCALE_MAX))
    e = rng.standard_normal((len(_PAIRED), 2))
    r = lr_correlation
    z = {}
    for (base, _, sd), (e1, e2) in zip(_PAIRED, e):
        left = e1
        right = r * e1 + math.sqrt(max(1.0 - r * r, 0.0)) * e2
        z[f"left_{base}"] = float(sd * np.clip(left, -_LOG_FACTOR_CLIP, _LOG_FACTOR_CLIP))
        z[f"right_{base}"] = float(sd * np.clip(right, -_LOG_FACTOR_CLIP, _LOG_FACTOR_CLIP))
    # Elastic plane waves: random directions, wavelengths, amplitudes, phases.
    direction = rng.standard_normal((_N_WAVES, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    wavelength = rng.uniform(*_WAVELENGTH_MM, size=_N_WAVES)
    k = direction * (2 * math.pi / wavelength)[:, None]
    amp = rng.normal(0.0, _WAVE_AMPLITUDE_MM, size=(3, _N_WAVES))
    phase = rng.uniform(0, 2 * math.pi, size=(3, _N_WAVES))
    # Intensity: gain, gamma (contrast), bias field (quadratic in exp), noise.
    gain = float(np.exp(rng.uniform(math.log(400.0), math.log(1200.0))))
    gamma = float(np.exp(rng.uniform(-0.25, 0.25)))
    bias = rng.normal(0.0, 0.08, size=10)
    noise = float(rng.uniform(0.01, 0.04))
    return dict(
        scale=math.exp(log_scale),
        log_factors=z,
        waves=(k, amp, phase),
        gain=gain,
        gamma=gamma,
        bias=bias,
        noise=noise,
    )


def _bias_field(shape, coeffs):
    """exp(quadratic polynomial) over normalised grid coordinates in [-1, 1]."""
    u = [np.linspace(-1, 1, n).reshape([-1 if i == j else 1 for j in range(3)]) for i, n in enumerate(shape)]
    terms = [u[0], u[1], u[2], u[0] ** 2 - 1 / 3, u[1] ** 2 - 1 / 3, u[2] ** 2 - 1 / 3, u[0] * u[1], u[0] * u[2], u[1] * u[2]]
    poly = np.zeros(shape)
    for c, t in zip(coeffs[:9], terms):
        poly = poly + c * t
    return np.exp(poly)


def _warp(spacing, scale, amplitudes, waves, n_iter=_WARP_ITERATIONS):
    """Template-space position ``phi^-1(y)`` of the active grid voxels (3 x n).

    Solves ``x + u(x) = c0 + (y - c0) / s`` by the fixed-point iteration
    ``x <- z - u(x)``, which converges because ``|Du| < 1``; ``u`` is read
    from its values on the grid by trilinear interpolation.
    """
    g = _grid_cache(spacing)
    n = g.points.shape[0]
    U = np.zeros((3, n), dtype=np.float64)
    for a, (idx, V) in zip(amplitudes, g.bumps):
        if a != 0.0:
            U[:, idx] += a * V
    if waves is not None:
        U += _elastic(g.points.astype(np.float64), waves, False)
    pts = g.points[g.active].astype(np.float64)
    zpt = (_SCALE_CENTRE + (pts - _SCALE_CENTRE) / scale).T  # 3 x n
    if not np.any(U):
        return zpt
    Ug = U.reshape((3,) + g.shape)
    origin, step = g.affine[:3, 3], g.affine[0, 0]
    x = zpt.copy()
    for _ in range(n_iter):
        coords = (x - origin[:, None]) / step
        for c in range(3):
            x[c] = zpt[c] - ndimage.map_coordinates(Ug[c], coords, order=1, mode="nearest")
    return x


def _render(spacing, positions, params, noisy):
    """Image and labels of the grid from the template positions of the active voxels."""
    g = _grid_cache(spacing)
    atlas = _atlas()
    inv = np.linalg.inv(atlas.affine)
    vox = inv[:3, :3] @ positions + inv[:3, 3:4]
    t1 = np.zeros(g.points.shape[0], dtype=np.float32)
    labels = np.zeros(g.points.shape[0], dtype=np.int16)
    t1[g.active] = ndimage.map_coordinates(g.t1, vox, order=1, mode="constant", cval=0.0)
    labels[g.active] = ndimage.map_coordinates(atlas.labels, vox, order=0, mode="constant", cval=0)
    t1, labels = t1.reshape(g.shape), labels.reshape(g.shape)
    head = t1 > 0.02
    t1 = np.clip(t1, 0.0, 1.0)
    image = params["gain"] * t1 ** params["gamma"]
    if noisy:
        image = image * _bias_field(g.shape, params["bias"])
        rng = np.random.default_rng(params["noise_seed"])
        sd = params["noise"] * params["gain"]
        image = np.sqrt((image + sd * rng.standard_normal(g.shape)) ** 2 + (sd * rng.standard_normal(g.shape)) ** 2)
    image = np.where(head, image, 0.0).astype(np.float32)
    return image, labels


def generate_subject(
    index: int,
    *,
    spacing: float = DEFAULT_SPACING,
    lr_correlation: float = DEFAULT_LR_CORRELATION,
    cohort_seed: int = 0,
    overrides: dict | None = None,
) -> Subject:
    """Generate subject ``index`` of a synthetic cohort.

    Draws, from ``numpy.random.default_rng([cohort_seed, index])``: a global
    scale ``s`` (volumes x ``s**3``), a log volume factor ``z_k`` per
    structure (normal with standard deviation :data:`VOLUME_LOG_SD`, clipped
    at 2.5 sd; left/right of a pair correlated by ``lr_correlation``), three
    random elastic plane waves per displacement component (0.8 mm, 60-140 mm
    wavelength), and the intensity changes (gain, gamma, bias field, Rician
    noise). The bump amplitudes are solved so that every structure's volume
    is ``template_volume * s**3 * exp(z_k)`` up to the solver's tolerance;
    the reported volumes are the exact integral of the Jacobian determinant,
    whatever the solver reached.

    Args:
        index (int): subject index ``>= 0``.
        spacing (float, optional): grid spacing in mm (see
            :func:`default_grid`). Default: 3.0
        lr_correlation (float, optional): correlation in ``[-1, 1]`` of the
            left and right log volume factors of each pair.
            Default: 0.95
        cohort_seed (int, optional): seed of the cohort ``>= 0``. Default: 0
        overrides (dict, optional): structure name -> volume factor in
            ``[0.5, 2]`` replacing the drawn ``exp(z_k)`` (the random
            stream is unchanged), e.g. ``{"left_hippocampus": 0.7}``.
            Default: None

    Returns:
        Subject: image, labels, affine, exact volumes, index and ``params``
        (``scale``, ``volume_factors``, ``amplitudes``, intensity draws).

    Examples::

        >>> s = generate_subject(0, spacing=12.0)
        >>> s.image.shape, s.labels.dtype
        ((14, 17, 15), dtype('int16'))
        >>> sorted(s.volumes) == sorted(STRUCTURE_NAMES)
        True
    """
    index = _check_int("index", index)
    cohort_seed = _check_int("cohort_seed", cohort_seed)
    spacing = _check_spacing(spacing)
    lr_correlation = _check_correlation(lr_correlation)
    overrides = _check_overrides(overrides)
    rng = np.random.default_rng([cohort_seed, index])
    p = _draw(rng, lr_correlation)
    p["noise_seed"] = [cohort_seed, index, 1]
    log_factors = dict(p["log_factors"])
    for name, f in overrides.items():
        log_factors[name] = math.log(f)
    z = np.array([log_factors[name] for name in STRUCTURE_NAMES])
    cells = _cells()
    elastic_jac = _elastic(cells.points.astype(np.float64), p["waves"], True)
    amplitudes, det = _solve_amplitudes(z, elastic_jac)
    # Safety: where neighbouring bumps with opposite amplitudes would fold the
    # map, shrink the drawn (not overridden) log factors until det > floor.
    shrink = 1.0
    while det.min() < _MIN_JACOBIAN and shrink > 0.05:
        shrink *= 0.8
        z = np.array([log_factors[n] if n in overrides else shrink * log_factors[n] for n in STRUCTURE_NAMES])
        amplitudes, det = _solve_amplitudes(z, elastic_jac)
    if det.min() <= 0:
        raise ValueError(f"overrides {overrides} fold the deformation (Jacobian {det.min():.3f}); use milder factors")
    s = p["scale"]
    volumes = _exact_volumes(s, det)
    positions = _warp(spacing, s, amplitudes, p["waves"])
    image, labels = _render(spacing, positions, p, noisy=True)
    _, affine = default_grid(spacing)
    params = {
        "scale": s,
        "volume_factors": {n: math.exp(v) for n, v in zip(STRUCTURE_NAMES, z)},
        "overrides": overrides,
        "amplitudes": {n: float(a) for n, a in zip(STRUCTURE_NAMES, amplitudes)},
        "min_jacobian": float(s**3 * det.min()),
        "shrink": shrink,
        "elastic_waves": [w.tolist() for w in p["waves"]],
        "gain": p["gain"],
        "gamma": p["gamma"],
        "bias": p["bias"].tolist(),
        "noise": p["noise"],
        "lr_correlation": lr_correlation,
        "cohort_seed": cohort_seed,
    }
    return Subject(image=image, labels=labels, affine=affine, volumes=volumes, index=index, params=params)


def template(spacing: float = DEFAULT_SPACING) -> Subject:
    """The undeformed template on the grid (no bias, noise or contrast change).

    Args:
        spacing (float, optional): grid spacing in mm. Default: 3.0

    Returns:
        Subject: ``index = -1``, image = 1000 x template, volumes =
        :func:`template_volumes`.

    Examples::

        >>> t = template(12.0)
        >>> float(t.image.max()) <= 1000.0
        True
    """
    spacing = _check_spacing(spacing)
    positions = _warp(spacing, 1.0, np.zeros(len(STRUCTURE_NAMES)), None)
    p = {"gain": 1000.0, "gamma": 1.0}
    image, labels = _render(spacing, positions, p, noisy=False)
    _, affine = default_grid(spacing)
    return Subject(image, labels, affine, template_volumes(), -1, {"scale": 1.0, "template": True})


def generate_cohort(indices: Iterable[int], show_progress: bool = True, **kwargs) -> Iterator[Subject]:
    """Yield :func:`generate_subject` for each index, with a tqdm progress bar.

    Args:
        indices (iterable of int): subject indices.
        show_progress (bool, optional): show a progress bar. Default: True
        **kwargs: passed to :func:`generate_subject`.

    Examples::

        >>> [s.index for s in generate_cohort([3, 1], spacing=12.0, show_progress=False)]
        [3, 1]
    """
    from tqdm.auto import tqdm

    indices = list(indices)
    for i in tqdm(indices, desc="synth", unit="subject", disable=not show_progress):
        yield generate_subject(i, **kwargs)


def volumes_table(subjects) -> "pandas.DataFrame":  # noqa: F821
    """One row per subject: ``subject`` then one column per structure (cm³).

    Args:
        subjects (iterable of Subject): subjects.

    Returns:
        pandas.DataFrame: columns ``subject`` and :data:`STRUCTURE_NAMES`.

    Examples::

        >>> volumes_table([template(12.0)]).shape
        (1, 17)
    """
    import pandas as pd

    rows = [{"subject": _subject_id(s.index), **{n: s.volumes[n] for n in STRUCTURE_NAMES}} for s in subjects]
    return pd.DataFrame(rows, columns=["subject", *STRUCTURE_NAMES])


def _subject_id(index: int) -> str:
    return "template" if index < 0 else f"sub-{index:04d}"


def write_lut(path, labels: dict = LABELS) -> None:
    """Write a FreeSurferColorLUT-style table: ``index name R G B A`` lines (atomically).

    Args:
        path (str or Path): output file.
        labels (dict, optional): label value -> name. Default: :data:`LABELS`

    Examples::

        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "labels.txt")
        >>> write_lut(p)
        >>> open(p).read().splitlines()[1].split()[:2]
        ['0', 'Unknown']
    """
    lines = ["#No. Label Name:                R   G   B   A", f"{0:<4d} {'Unknown':<30s} {0:3d} {0:3d} {0:3d} {0:3d}"]
    for value, name in sorted(labels.items()):
        r, g, b = LABEL_COLORS.get(value, (128, 128, 128))
        lines.append(f"{int(value):<4d} {name:<30s} {r:3d} {g:3d} {b:3d} {0:3d}")
    from ._io import write_text

    write_text("\n".join(lines) + "\n", path)


def write_subject(subject: Subject, out_dir) -> tuple:
    """Write ``sub-XXXX_T1w.nii.gz`` and ``sub-XXXX_labels.nii.gz``.

    Args:
        subject (Subject): the subject.
        out_dir (str or Path): output folder (created).

    Returns:
        tuple: the two paths.
    """
    import nibabel as nib
    from pathlib import Path

    from ._io import atomic_write

    out_dir = Path(out_dir)
    stem = _subject_id(subject.index)
    paths = (out_dir / f"{stem}_T1w.nii.gz", out_dir / f"{stem}_labels.nii.gz")
    for path, data in zip(paths, (subject.image, subject.labels)):
        img = nib.Nifti1Image(data, subject.affine)
        img.header.set_xyzt_units("mm")
        img.set_qform(subject.affine, code=4)  # 4 = MNI152
        img.set_sform(subject.affine, code=4)
        with atomic_write(path) as tmp:
            nib.save(img, tmp)
    return paths


def write_cohort(
    out_dir,
    n: int,
    *,
    seed: int = 0,
    lr_correlation: float = DEFAULT_LR_CORRELATION,
    spacing: float = DEFAULT_SPACING,
    show_progress: bool = True,
) -> "pandas.DataFrame":  # noqa: F821
    """Write subjects ``0 .. n-1``, ``labels.txt`` and ``volumes.csv``.

    Args:
        out_dir (str or Path): output folder (created).
        n (int): number of subjects ``>= 1``.
        seed (int, optional): cohort seed. Default: 0
        lr_correlation (float, optional): see :func:`generate_subject`.
            Default: 0.95
        spacing (float, optional): grid spacing in mm. Default: 3.0
        show_progress (bool, optional): tqdm progress bar. Default: True

    Returns:
        pandas.DataFrame: the volumes table written to ``volumes.csv``.

    Examples::

        >>> import tempfile
        >>> df = write_cohort(tempfile.mkdtemp(), 2, spacing=12.0, show_progress=False)
        >>> list(df["subject"])
        ['sub-0000', 'sub-0001']
    """
    from pathlib import Path

    from ._io import write_csv

    n = _check_int("n", n, minimum=1)
    seed = _check_int("seed", seed)
    lr_correlation = _check_correlation(lr_correlation)
    spacing = _check_spacing(spacing)
    out_dir = Path(out_dir)
    subjects = []
    for subject in generate_cohort(
        range(n), show_progress=show_progress, spacing=spacing, lr_correlation=lr_correlation, cohort_seed=seed
    ):
        write_subject(subject, out_dir)
        subject.image = subject.labels = None  # keep only the volumes in memory
        subjects.append(subject)
    table = volumes_table(subjects)
    write_lut(out_dir / "labels.txt")
    write_csv(table, out_dir / "volumes.csv", float_format="%.6f")
    return table


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
        from ._io import save_figure

        save_figure(fig, output_file, dpi=80)
    return fig
