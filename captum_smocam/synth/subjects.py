"""Subjects: the random draws of one subject, its deformation solved, its image and labels rendered.

:func:`generate_subject` draws from ``numpy.random.default_rng([cohort_seed,
index])`` (scale, log volume factors, elastic waves, intensity changes), solves
the deformation (:mod:`.deformation`) and renders the T1-like image and the
label map on :func:`~.anatomy.default_grid`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
from scipy import ndimage

from .anatomy import (
    DEFAULT_SPACING,
    STRUCTURE_NAMES,
    _NAME_TO_LABEL,
    _PAIRED,
    _atlas,
    _check_spacing,
    default_grid,
    template_volumes,
)
from .deformation import _exact_volumes, _grid_cache, _solve_deformation, _warp

#: Correlation between the left and right log volume factors of a pair.
DEFAULT_LR_CORRELATION: float = 0.95

# Random draws.
_GLOBAL_LOG_SCALE_SD = 0.03  # linear scale s = exp(N(0, sd)); volumes x s^3
_GLOBAL_LOG_SCALE_MAX = 0.08
_LOG_FACTOR_CLIP = 2.5  # draws clipped at +-2.5 sd
_OVERRIDE_RANGE = (0.5, 2.0)
_N_WAVES = 3  # elastic field: random plane waves per component
_WAVE_AMPLITUDE_MM = 0.8
_WAVELENGTH_MM = (60.0, 140.0)


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
    z, amplitudes, det, shrink = _solve_deformation(log_factors, overrides, p["waves"])
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
