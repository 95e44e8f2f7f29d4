"""The deformation ``phi`` of the template and the exact volumes it gives each structure.

``phi(x) = c0 + s * (x - c0 + sum_k a_k w_k(x) (x - c_k) + u_elastic(x))``: a
global scale, one bump (or, for cerebral grey and white matter, the gradient
of a tissue potential) per structure and random elastic plane waves. The
amplitudes ``a_k`` are solved so that each structure's volume changes by the
drawn factor (:func:`_solve_amplitudes`); the volumes are the integral of
``det D phi`` over each template label (:func:`_exact_volumes`), and
:func:`_warp` inverts ``phi`` on the image grid.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .anatomy import LABELS, STRUCTURE_NAMES, _atlas, _mni_axes, default_grid

# Centre of the global scaling (MNI mm): the centre of the brain's bounding box.
_SCALE_CENTRE = np.array([0.0, -17.0, 5.0])

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


def _solve_deformation(log_factors: dict, fixed, waves):
    """The deformation of one subject: bump amplitudes for its log volume factors, and no fold.

    Where neighbouring bumps with opposite amplitudes would fold the map
    (``det(I + Du) < _MIN_JACOBIAN`` at a cell), the log factors of the
    structures not in ``fixed`` (the drawn ones, not the overridden) are shrunk
    by 0.8 at a time, down to 5 %, until it no longer folds.

    Args:
        log_factors (dict): structure name -> log volume factor.
        fixed (collection of str): structures whose factor is never shrunk.
        waves (tuple): the elastic plane waves ``(k, amp, phase)``.

    Returns:
        tuple: ``(z, amplitudes, det, shrink)``: the log factors reached (in
        :data:`STRUCTURE_NAMES` order), the amplitudes, ``det(I + Du)`` at the
        cells and the shrink factor applied.
    """
    z = np.array([log_factors[name] for name in STRUCTURE_NAMES])
    elastic_jac = _elastic(_cells().points.astype(np.float64), waves, True)
    amplitudes, det = _solve_amplitudes(z, elastic_jac)
    shrink = 1.0
    while det.min() < _MIN_JACOBIAN and shrink > 0.05:
        shrink *= 0.8
        z = np.array([log_factors[n] if n in fixed else shrink * log_factors[n] for n in STRUCTURE_NAMES])
        amplitudes, det = _solve_amplitudes(z, elastic_jac)
    return z, amplitudes, det, shrink


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
