"""Scores of attribution maps on the input grid, for 1-D, 2-D and 3-D data.

The functions here compare an attribution map (SMOCAM, Grad-CAM, Occlusion,
Saliency, DeepLIFT, ...) with a structure whose location is known, measure how
faithful the map is to the model, and run the model-randomisation sanity check.
They are plain functions so that a benchmark can call each one per subject,
per method and per output, and put the numbers in a table.

Families of scores:

* **Localisation** -- :func:`mass_inside`, :func:`dilate_mask`,
  :func:`mass_inside_dilated`, :func:`auroc`, :func:`pointing_game`.
* **Side specificity** for paired structures (left/right hippocampus) --
  :func:`side_specificity`, :func:`side_specificity_density`,
  :func:`hemisphere_share`.
* **Faithfulness** for a regression output -- :func:`deletion_insertion`
  (Petsiuk et al. 2018), with the change of prediction measured as
  ``|f(x') - f(x)| / sigma``.
* **Sanity** -- :func:`spearman`, :func:`cascading_randomization`
  (Adebayo et al. 2018).

Every map argument accepts a ``numpy.ndarray`` or a ``torch.Tensor`` of shape
``(*spatial)``; a map of shape ``(1, *spatial)`` or ``(1, 1, *spatial)`` (a
batch of one, with one channel) is squeezed to ``(*spatial)`` when it is paired
with a map of shape ``(*spatial)``. Masks are boolean, or numeric with values in
``{0, 1}``. The definitions, directions and references are in
``docs/metrics.md``.

References:
    J. Zhang, S. A. Bargal, Z. Lin, J. Brandt, X. Shen, S. Sclaroff,
    "Top-down neural attention by excitation backprop", ECCV 2016.

    V. Petsiuk, A. Das, K. Saenko, "RISE: Randomized input sampling for
    explanation of black-box models", BMVC 2018.

    J. Adebayo, J. Gilmer, M. Muelly, I. Goodfellow, M. Hardt, B. Kim,
    "Sanity checks for saliency maps", NeurIPS 2018.
"""
from __future__ import annotations

import copy
import numbers
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from scipy import ndimage
from scipy.stats import rankdata

__all__ = [
    "mass_inside",
    "dilate_mask",
    "mass_inside_dilated",
    "auroc",
    "pointing_game",
    "side_specificity",
    "side_specificity_density",
    "hemisphere_share",
    "deletion_insertion",
    "spearman",
    "cascading_randomization",
    "DEFAULT_FRACTIONS",
    "POINTING_TIES",
]

#: Fractions of voxels perturbed by :func:`deletion_insertion` by default.
DEFAULT_FRACTIONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)

#: Tie rules accepted by :func:`pointing_game`: ``"all"`` (every voxel that
#: attains the maximum must be inside the mask) or ``"any"`` (one is enough).
POINTING_TIES = ("all", "any")

# Relative tolerance on the dilation radius, so that a voxel at exactly
# ``margin_mm`` (e.g. sqrt(2) mm) is inside despite floating-point rounding.
_DILATION_RTOL = 1e-9

ArrayLike = Union[np.ndarray, torch.Tensor]


# ---------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------
def _to_numpy(x, name: str) -> np.ndarray:
    """Return ``x`` (numpy array or torch tensor) as a numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(
        f"{name} must be a numpy.ndarray or a torch.Tensor, got {type(x).__name__}"
    )


def _as_map(x, name: str) -> np.ndarray:
    """An attribution map as finite float64."""
    a = _to_numpy(x, name)
    if a.dtype == bool:
        a = a.astype(np.float64)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if a.ndim == 0:
        raise ValueError(f"{name} must have at least one spatial dimension, got shape ()")
    n_bad = int(np.count_nonzero(~np.isfinite(a)))
    if n_bad:
        raise ValueError(
            f"{name} has {n_bad} non-finite value(s) (NaN or inf); expected finite values"
        )
    return a


def _as_mask(x, name: str) -> np.ndarray:
    """A mask as a boolean array; numeric masks must hold only 0 and 1."""
    m = _to_numpy(x, name)
    if m.ndim == 0:
        raise ValueError(f"{name} must have at least one spatial dimension, got shape ()")
    if m.dtype != bool:
        if not (np.issubdtype(m.dtype, np.floating) or np.issubdtype(m.dtype, np.integer)):
            raise TypeError(f"{name} must be boolean or numeric, got dtype {m.dtype}")
        values = np.unique(m)
        if not np.all(np.isin(values, (0, 1))):
            shown = values[~np.isin(values, (0, 1))][:5]
            raise ValueError(
                f"{name} must be boolean or hold only 0 and 1, found values such as "
                f"{shown.tolist()}"
            )
        m = m.astype(bool)
    return m


def _check_not_empty(mask: np.ndarray, name: str) -> None:
    if not mask.any():
        raise ValueError(f"{name} is empty (no voxel set, shape {mask.shape}); expected at least one")


def _strip_leading(x: np.ndarray, n: int) -> Optional[np.ndarray]:
    """Drop ``n`` (at most 2) leading axes of size 1, or return None."""
    if n == 0:
        return x
    if n > 2 or x.ndim - n < 1 or any(s != 1 for s in x.shape[:n]):
        return None
    return x.reshape(x.shape[n:])


def _pair(a: np.ndarray, b: np.ndarray, a_name: str, b_name: str):
    """Bring two maps to the same shape by squeezing batch/channel axes."""
    if a.shape == b.shape:
        return a, b
    if a.ndim > b.ndim:
        a2, b2 = _strip_leading(a, a.ndim - b.ndim), b
    else:
        a2, b2 = a, _strip_leading(b, b.ndim - a.ndim)
    if a2 is None or b2 is None or a2.shape != b2.shape:
        raise ValueError(
            f"shape mismatch: {a_name} has shape {tuple(a.shape)} and {b_name} has shape "
            f"{tuple(b.shape)}; expected the same spatial shape (leading axes of size 1, "
            "at most two, are squeezed)"
        )
    return a2, b2


def _spacing_values(spacing):
    """A spacing as a float or a tuple of floats (not yet checked)."""
    if isinstance(spacing, torch.Tensor):
        spacing = spacing.detach().cpu().numpy()
    if isinstance(spacing, np.ndarray):
        spacing = spacing.item() if spacing.ndim == 0 else tuple(spacing.ravel().tolist())
    if isinstance(spacing, numbers.Real) and not isinstance(spacing, bool):
        return float(spacing)
    try:
        return tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise TypeError(
            "spacing must be a positive number or a sequence of positive numbers (one per "
            f"axis), got {spacing!r}"
        ) from None


def _spacing(spacing, ndim: int) -> tuple:
    """Validate a voxel spacing (scalar or one value per axis)."""
    values = _spacing_values(spacing)
    if isinstance(values, float):
        values = (values,) * ndim
    elif len(values) != ndim:
        raise ValueError(
            f"spacing has {len(values)} value(s) {values} but the mask has {ndim} "
            "spatial dimension(s); expected a scalar or one value per axis"
        )
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must be positive and finite, got {values}")
    return values


def _positive_mass(a: np.ndarray, positive_only: bool) -> np.ndarray:
    return np.clip(a, 0.0, None) if positive_only else np.abs(a)


# ---------------------------------------------------------------------------
# Localisation
# ---------------------------------------------------------------------------
def mass_inside(attribution: ArrayLike, mask: ArrayLike, *, positive_only: bool = True) -> float:
    r"""Share of the attribution mass that lies inside a mask.

    .. math::

        \mathrm{MI}(a, S) = \frac{\sum_{v \in S} a_v^+}{\sum_{v} a_v^+},
        \qquad a_v^+ = \max(a_v, 0)

    Negative attribution (evidence *against* the output) is ignored, so that a
    map cannot score by cancelling mass. 1 means all positive mass is in the
    structure; a uniform map scores ``|S| / N``. Higher is better.

    Args:
        attribution (numpy.ndarray or torch.Tensor): map of shape
            ``(*spatial)``, ``(1, *spatial)`` or ``(1, 1, *spatial)``.
        mask (numpy.ndarray or torch.Tensor): boolean (or 0/1) mask of the
            structure on the same grid.
        positive_only (bool, optional): if ``True`` use :math:`a^+`; if
            ``False`` use :math:`|a|` (share of the attribution magnitude).
            Default: ``True``

    Returns:
        float: the share in ``[0, 1]``, or ``nan`` when the map has no positive
        mass (no magnitude with ``positive_only=False``): the share of nothing
        is undefined, and ``nan`` keeps such a map out of means computed with
        ``nanmean`` instead of counting it as 0 or 1.

    Raises:
        ValueError: shapes differ, the mask is empty or not binary, or the map
            has non-finite values.

    Examples::

        >>> import numpy as np
        >>> a = np.zeros((7, 8, 9)); a[1, 2, 3] = 3.0; a[5, 5, 5] = 1.0
        >>> m = np.zeros((7, 8, 9), bool); m[1, 2, 3] = True
        >>> mass_inside(a, m)
        0.75
    """
    a, m = _pair(_as_map(attribution, "attribution"), _as_mask(mask, "mask"), "attribution", "mask")
    _check_not_empty(m, "mask")
    w = _positive_mass(a, positive_only)
    total = float(w.sum())
    if total == 0.0:
        return float("nan")
    return float(w[m].sum() / total)


def dilate_mask(mask: ArrayLike, margin_mm: float, spacing=1.0) -> np.ndarray:
    r"""Grow a mask by a physical margin using the Euclidean distance transform.

    A voxel :math:`v` is in the dilated mask when its centre is within
    ``margin_mm`` of the centre of some voxel :math:`u` of the mask, distances
    measured in millimetres with the voxel spacing :math:`s`:

    .. math::

        D_r(S) = \{ v : \min_{u \in S} \lVert (v - u) \odot s \rVert_2 \le r \}

    computed with ``scipy.ndimage.distance_transform_edt(~mask, sampling=s)``
    (a relative tolerance of 1e-9 on :math:`r` keeps voxels at exactly
    :math:`r`, e.g. :math:`\sqrt{2}`, inside). A single voxel grows into the
    discrete ball of radius :math:`r`.

    Args:
        mask (numpy.ndarray or torch.Tensor): boolean (or 0/1) mask of any
            shape ``(*spatial)``; leading axes of size 1 are kept.
        margin_mm (float): the margin :math:`r \ge 0`, in the units of
            ``spacing`` (millimetres for a NIfTI image's zooms). 0 returns a
            copy of the mask.
        spacing (float or sequence of float, optional): voxel size, one value
            for all axes or one per axis (``img.header.get_zooms()[:3]``). When
            the mask has more axes than ``spacing`` values, at most two leading
            axes of size 1 are ignored. Default: ``1.0``

    Returns:
        numpy.ndarray: boolean array of the mask's shape.

    Raises:
        ValueError: empty mask, negative or non-finite margin, bad spacing.

    Examples::

        >>> import numpy as np
        >>> m = np.zeros((7, 8, 9), bool); m[3, 4, 4] = True
        >>> int(dilate_mask(m, 1.0).sum())        # the voxel and its 6 faces
        7
        >>> int(dilate_mask(m, 2.0, spacing=(2.0, 1.0, 1.0)).sum())
        15
    """
    m = _as_mask(mask, "mask")
    _check_not_empty(m, "mask")
    if not isinstance(margin_mm, numbers.Real) or isinstance(margin_mm, bool):
        raise TypeError(f"margin_mm must be a real number, got {margin_mm!r}")
    margin = float(margin_mm)
    if not np.isfinite(margin) or margin < 0:
        raise ValueError(f"margin_mm must be finite and >= 0, got {margin_mm!r}")
    work = m
    values = _spacing_values(spacing)
    if isinstance(values, tuple) and 0 < len(values) < m.ndim:
        stripped = _strip_leading(m, m.ndim - len(values))
        if stripped is not None:
            work = stripped
    sampling = _spacing(values, work.ndim)
    if margin == 0.0:
        return m.copy()
    distance = ndimage.distance_transform_edt(~work, sampling=sampling)
    grown = distance <= margin * (1.0 + _DILATION_RTOL)
    return grown.reshape(m.shape)


def mass_inside_dilated(
    attribution: ArrayLike,
    mask: ArrayLike,
    margin_mm: float,
    spacing=1.0,
    *,
    positive_only: bool = True,
) -> float:
    r"""Share of the positive attribution mass inside the mask grown by a margin.

    :math:`\mathrm{MI}(a, D_r(S))` with :math:`D_r` from :func:`dilate_mask`.
    SMOCAM tends to highlight a structure *and its neighbours* (Konate et al.,
    SMOCAM poster); this score credits mass within ``margin_mm`` of the
    structure. Higher is better; compare methods at the same margin.

    Args:
        attribution (numpy.ndarray or torch.Tensor): map on the mask's grid.
        mask (numpy.ndarray or torch.Tensor): boolean (or 0/1) mask.
        margin_mm (float): margin in the units of ``spacing``.
        spacing (float or sequence of float, optional): voxel size.
            Default: ``1.0``
        positive_only (bool, optional): see :func:`mass_inside`.
            Default: ``True``

    Returns:
        float: the share in ``[0, 1]``, or ``nan`` when the map has no
        positive mass.

    Examples::

        >>> import numpy as np
        >>> a = np.zeros((7, 8, 9)); a[3, 4, 4] = 1.0; a[3, 4, 5] = 1.0
        >>> m = np.zeros((7, 8, 9), bool); m[3, 4, 4] = True
        >>> mass_inside_dilated(a, m, margin_mm=1.0)
        1.0
    """
    a, m = _pair(_as_map(attribution, "attribution"), _as_mask(mask, "mask"), "attribution", "mask")
    grown = dilate_mask(m, margin_mm, spacing)
    return mass_inside(a, grown, positive_only=positive_only)


def auroc(attribution: ArrayLike, mask: ArrayLike) -> float:
    r"""Area under the ROC curve of the map used as a detector of the mask's voxels.

    Each voxel is a sample, the structure's voxels are positives, the
    attribution value is the score. With :math:`R_v` the rank of :math:`a_v`
    among all :math:`N` voxels (ties receive their average rank), :math:`P`
    positives and :math:`Q = N - P` negatives, the Mann--Whitney formula gives

    .. math::

        \mathrm{AUROC} = \frac{\sum_{v \in S} R_v - P(P+1)/2}{P\,Q}
        = \Pr(a_u > a_w) + \tfrac12 \Pr(a_u = a_w),
        \quad u \in S,\ w \notin S .

    1 means every structure voxel scores above every other voxel, 0.5 is
    chance (a constant map scores exactly 0.5), 0 is the inverted map. Higher
    is better. The signed map is used: AUROC depends only on the order of the
    values, so negative evidence ranks below zero.

    Args:
        attribution (numpy.ndarray or torch.Tensor): map on the mask's grid.
        mask (numpy.ndarray or torch.Tensor): boolean (or 0/1) mask.

    Returns:
        float: AUROC in ``[0, 1]``.

    Raises:
        ValueError: the mask is empty or covers every voxel (no negatives),
            shapes differ.

    Examples::

        >>> import numpy as np
        >>> m = np.zeros((7, 8, 9), bool); m[2:4, 3:5, 1:6] = True
        >>> auroc(m.astype(float), m), auroc(1.0 - m, m)
        (1.0, 0.0)
    """
    a, m = _pair(_as_map(attribution, "attribution"), _as_mask(mask, "mask"), "attribution", "mask")
    _check_not_empty(m, "mask")
    n_pos = int(m.sum())
    n_neg = m.size - n_pos
    if n_neg == 0:
        raise ValueError(
            f"mask covers all {m.size} voxels; AUROC needs voxels outside the mask"
        )
    ranks = rankdata(a.ravel(), method="average")
    u = ranks[m.ravel()].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (float(n_pos) * float(n_neg)))


def pointing_game(
    attribution: ArrayLike,
    mask: ArrayLike,
    *,
    margin_mm: float = 0.0,
    spacing=1.0,
    ties: str = "all",
) -> bool:
    r"""Pointing game: is the map's maximum inside the (dilated) structure?

    Zhang et al. (2016) count a *hit* when the maximum of the map falls on the
    annotated object, with a tolerance of 15 pixels; here the tolerance is a
    physical ``margin_mm`` (:func:`dilate_mask`). Over a set of subjects the
    pointing accuracy is ``hits / (hits + misses)``; higher is better.

    Ties: when several voxels share the maximum value, ``ties="all"``
    (default) counts a hit only if *every* maximal voxel is inside the
    dilated mask; ``ties="any"`` counts a hit if at least one is. The strict
    default is chosen because with ``"any"`` a constant (e.g. all-zero or
    saturated) map would hit every structure.

    Args:
        attribution (numpy.ndarray or torch.Tensor): map on the mask's grid.
        mask (numpy.ndarray or torch.Tensor): boolean (or 0/1) mask.
        margin_mm (float, optional): tolerance in the units of ``spacing``.
            Default: ``0.0``
        spacing (float or sequence of float, optional): voxel size.
            Default: ``1.0``
        ties (str, optional): ``"all"`` or ``"any"``, see above.
            Default: ``"all"``

    Returns:
        bool: ``True`` for a hit.

    Examples::

        >>> import numpy as np
        >>> a = np.zeros((7, 8, 9)); a[3, 4, 6] = 1.0
        >>> m = np.zeros((7, 8, 9), bool); m[3, 4, 4] = True
        >>> pointing_game(a, m), pointing_game(a, m, margin_mm=2.0)
        (False, True)
    """
    if ties not in POINTING_TIES:
        raise ValueError(f"ties must be one of {POINTING_TIES}, got {ties!r}")
    a, m = _pair(_as_map(attribution, "attribution"), _as_mask(mask, "mask"), "attribution", "mask")
    region = dilate_mask(m, margin_mm, spacing)
    at_max = a == a.max()
    inside = region[at_max]
    return bool(inside.all() if ties == "all" else inside.any())


# ---------------------------------------------------------------------------
# Side specificity
# ---------------------------------------------------------------------------
def _positive_on_pair(attribution, target_mask, contralateral_mask):
    """``(positive part of the map, target mask, contralateral mask)``, checked and on one grid."""
    a = _as_map(attribution, "attribution")
    t = _as_mask(target_mask, "target_mask")
    c = _as_mask(contralateral_mask, "contralateral_mask")
    a, t = _pair(a, t, "attribution", "target_mask")
    a, c = _pair(a, c, "attribution", "contralateral_mask")
    _check_not_empty(t, "target_mask")
    _check_not_empty(c, "contralateral_mask")
    return np.clip(a, 0.0, None), t, c


def side_specificity(
    attribution: ArrayLike, target_mask: ArrayLike, contralateral_mask: ArrayLike
) -> float:
    r"""Share of the positive mass on a paired structure that is on the target side.

    .. math::

        \mathrm{SS}(a) = \frac{\sum_{v \in T} a_v^+}{\sum_{v \in T \cup C} a_v^+}

    with :math:`T` the target structure (e.g. the right hippocampus, whose
    volume is predicted) and :math:`C` its contralateral twin. 1: the map uses
    only the target side; 0.5: both sides equally (the failure the SMOCAM
    poster reports for subjects with a large asymmetry); 0: only the wrong
    side. Higher is better. Voxels in both masks count once, as target.
    Mass outside :math:`T \cup C` is ignored (see :func:`mass_inside`).

    Args:
        attribution (numpy.ndarray or torch.Tensor): map on the masks' grid.
        target_mask (numpy.ndarray or torch.Tensor): boolean (or 0/1) mask of
            the structure whose output is explained.
        contralateral_mask (numpy.ndarray or torch.Tensor): the other side.

    Returns:
        float: the share in ``[0, 1]``, or ``nan`` when the map has no
        positive mass on either structure: the map says nothing about the
        side, which is neither specific (1) nor unspecific (0.5).

    Raises:
        ValueError: shapes differ, a mask is empty or not binary.

    Examples::

        >>> import numpy as np
        >>> a = np.zeros((7, 8, 9)); a[1, 1, 1] = 3.0; a[5, 1, 1] = 1.0
        >>> right = np.zeros((7, 8, 9), bool); right[1, 1, 1] = True
        >>> left = np.zeros((7, 8, 9), bool); left[5, 1, 1] = True
        >>> side_specificity(a, right, left)
        0.75
    """
    w, t, c = _positive_on_pair(attribution, target_mask, contralateral_mask)
    on_target = float(w[t].sum())
    on_both = float(w[t | c].sum())
    if on_both == 0.0:
        return float("nan")
    return on_target / on_both


def side_specificity_density(
    attribution: ArrayLike, target_mask: ArrayLike, contralateral_mask: ArrayLike
) -> float:
    r"""Like :func:`side_specificity`, but on the mean positive attention per voxel of each side.

    .. math::

        \mathrm{SS}_\rho(a) = \frac{\bar a^+_T}{\bar a^+_T + \bar a^+_C},
        \qquad \bar a^+_S = \frac{1}{|S|} \sum_{v \in S} a_v^+

    The mass version is biased by the structures' sizes: a uniform map gets
    :math:`|T| / (|T| + |C|)`, e.g. 0.4 for the smaller side of a pair whose
    volumes differ by 40 %. The density version gives 0.5 to a uniform map
    whatever the sizes, so it compares subjects with different asymmetries.
    1: only the target side; 0.5: both sides alike; 0: only the wrong side.
    Higher is better. Voxels in both masks count on both sides.

    Args:
        attribution (numpy.ndarray or torch.Tensor): map on the masks' grid.
        target_mask (numpy.ndarray or torch.Tensor): boolean (or 0/1) mask of
            the structure whose output is explained.
        contralateral_mask (numpy.ndarray or torch.Tensor): the other side.

    Returns:
        float: the share in ``[0, 1]``, or ``nan`` when the map has no
        positive attention on either structure.

    Raises:
        ValueError: shapes differ, a mask is empty or not binary.

    Examples::

        >>> import numpy as np
        >>> a = np.ones((7, 8, 9)); t = np.zeros_like(a, bool); t[:2] = True
        >>> c = np.zeros_like(a, bool); c[4:] = True
        >>> side_specificity_density(a, t, c)  # uniform map, |C| = 1.5 |T|
        0.5
        >>> side_specificity(a, t, c)
        0.4
    """
    w, t, c = _positive_on_pair(attribution, target_mask, contralateral_mask)
    on_target, on_other = float(w[t].mean()), float(w[c].mean())
    if on_target + on_other == 0.0:
        return float("nan")
    return on_target / (on_target + on_other)


def hemisphere_share(attribution: ArrayLike, affine: ArrayLike, side: str) -> float:
    r"""Share of the positive mass of a map that lies in one hemisphere.

    The hemisphere of a voxel is the sign of its world x coordinate (RAS, as
    in MNI space: :math:`x < 0` is left, :math:`x > 0` right), computed from
    ``affine``; voxels on the midplane :math:`x = 0` count for neither side.
    Unlike :func:`side_specificity`, it needs no label map: it says whether a
    map of the right hippocampus looks at the right half of the brain at all.

    Args:
        attribution (numpy.ndarray or torch.Tensor): map, ``X x Y x Z``.
        affine (numpy.ndarray or torch.Tensor): ``4 x 4`` voxel-to-world
            matrix of the map's grid.
        side (str): ``"left"`` or ``"right"``.

    Returns:
        float: the share in ``[0, 1]``, or ``nan`` when the map has no
        positive mass off the midplane.

    Raises:
        ValueError: ``side`` is neither ``"left"`` nor ``"right"``, or
        ``affine`` is not ``4 x 4`` or does not match the map's dimensions.

    Examples::

        >>> import numpy as np
        >>> affine = np.diag([3.0, 3.0, 3.0, 1.0]); affine[0, 3] = -9.0  # x = -9, -6, ..., 9
        >>> a = np.zeros((7, 8, 9)); a[5] = 1.0; a[1] = 1.0 / 3  # x = +6 and x = -6
        >>> round(hemisphere_share(a, affine, "right"), 6)
        0.75
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    a = _as_map(attribution, "attribution")
    m = np.asarray(_to_numpy(affine, "affine"), dtype=np.float64)
    if m.shape != (4, 4) or a.ndim != 3:
        raise ValueError(
            f"expected a 3-D map and a 4 x 4 affine, got map shape {a.shape} and affine shape {m.shape}"
        )
    i, j, k = np.ogrid[: a.shape[0], : a.shape[1], : a.shape[2]]
    x = m[0, 0] * i + m[0, 1] * j + m[0, 2] * k + m[0, 3]  # world x of every voxel
    w = np.clip(a, 0.0, None)
    left, right = float(w[x < 0].sum()), float(w[x > 0].sum())
    if left + right == 0.0:
        return float("nan")
    return (left if side == "left" else right) / (left + right)


# ---------------------------------------------------------------------------
# Faithfulness: deletion / insertion
# ---------------------------------------------------------------------------
def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def _normalised_auc(curve: np.ndarray, fractions: np.ndarray) -> float:
    return _trapezoid(curve, fractions) / float(fractions[-1] - fractions[0])


def _check_fractions(fractions) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or f.size < 2:
        raise ValueError(
            f"fractions must be a 1-D sequence of at least 2 values, got {fractions!r}"
        )
    if not np.all(np.isfinite(f)) or f.min() < 0 or f.max() > 1:
        raise ValueError(f"fractions must lie in [0, 1], got {f.tolist()}")
    if not np.all(np.diff(f) > 0):
        raise ValueError(f"fractions must be strictly increasing, got {f.tolist()}")
    return f


def _spatial_attribution(attribution, channels: int, spatial: tuple) -> np.ndarray:
    """Attribution over voxels: accepts (*spatial), (1|C, *spatial), (1, 1|C, *spatial)."""
    a = _as_map(attribution, "attribution")
    shape = tuple(a.shape)
    if shape == spatial:
        return a
    if shape in ((channels,) + spatial, (1,) + spatial):
        return a.sum(axis=0)
    if shape in ((1, channels) + spatial, (1, 1) + spatial):
        return a.sum(axis=(0, 1))
    raise ValueError(
        f"attribution has shape {shape}; expected {spatial}, {(channels,) + spatial} or "
        f"{(1, channels) + spatial} for inputs with {channels} channel(s) on grid {spatial}"
    )


def _rank_of_voxels(order: np.ndarray) -> np.ndarray:
    """rank[v] = position of voxel v in ``order`` (0 = first to perturb)."""
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size, dtype=np.int64)
    return rank


def _outputs(forward_func, batch: torch.Tensor, target: Optional[int]) -> np.ndarray:
    out = forward_func(batch)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"forward_func must return a torch.Tensor, got {type(out).__name__}")
    n = batch.shape[0]
    if out.ndim == 0:
        out = out.reshape(1, 1)
    if out.shape[0] != n:
        raise ValueError(
            f"forward_func returned shape {tuple(out.shape)} for a batch of {n}; "
            f"expected ({n}, n_outputs)"
        )
    out = out.reshape(n, -1)
    if target is None:
        if out.shape[1] != 1:
            raise ValueError(
                f"target=None needs a single output, but forward_func returned "
                f"{out.shape[1]} outputs; pass target=<output index>"
            )
        col = 0
    else:
        if not -out.shape[1] <= target < out.shape[1]:
            raise ValueError(
                f"target {target} is out of range for {out.shape[1]} model outputs"
            )
        col = target
    return out[:, col].detach().to(torch.float64).cpu().numpy()


def deletion_insertion(
    forward_func: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    attribution: ArrayLike,
    target: Optional[int],
    *,
    baseline: Union[float, torch.Tensor] = 0.0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    output_std: float = 1.0,
    random_orderings: int = 0,
    generator: Union[None, int, torch.Generator] = None,
    batch_size: int = 8,
    show_progress: bool = False,
) -> dict:
    r"""Deletion and insertion curves (Petsiuk et al. 2018) for a regression output.

    Voxels are ordered by decreasing attribution (summed over channels if
    the map has one per input channel); ties are broken by the C-order flat
    index, lowest first, so the result is deterministic. For each fraction
    :math:`f` the top :math:`k_f = \lfloor f N + \tfrac12 \rfloor` of the
    :math:`N` voxels (all channels of a voxel together) are perturbed:

    * **deletion**: replace them with the baseline :math:`b`,
      :math:`x^{\mathrm{del}}_f = x \odot (1 - M_f) + b \odot M_f`;
    * **insertion**: start from the baseline and restore them,
      :math:`x^{\mathrm{ins}}_f = b \odot (1 - M_f) + x \odot M_f`.

    For a regression output there is no class probability to watch fall,
    so the curves record the absolute change of the prediction in units of
    the output's standard deviation :math:`\sigma` (the distance SMOCAM
    minimises):

    .. math::

        D(f) = \frac{|F(x^{\mathrm{del}}_f) - F(x)|}{\sigma}, \qquad
        I(f) = \frac{|F(x^{\mathrm{ins}}_f) - F(x)|}{\sigma}.

    :math:`D(0) = I(1) = 0` and :math:`D(1) = I(0) = |F(b) - F(x)|/\sigma`.
    The area under each curve is the trapezoid rule over ``fractions``,
    divided by the span of ``fractions`` (so it is the mean height; with the
    default fractions, which span [0, 1], it is the plain area).

    **Direction.** A faithful map puts the voxels the prediction depends on
    first, so the prediction moves away from :math:`F(x)` after deleting few
    voxels (deletion curve rises fast: **larger deletion AUC is better**)
    and comes back to :math:`F(x)` after restoring few voxels (insertion
    curve falls fast: **smaller insertion AUC is better**). This is the
    reverse of the sign convention of Petsiuk et al., whose curves show
    the class probability itself rather than its change. Compare with the
    reference from ``random_orderings`` random voxel orders.

    The model is called under ``torch.no_grad()`` on batches of perturbed
    inputs; it is not switched to eval mode here (call ``model.eval()``
    first). To pass extra forward arguments, wrap the model in a lambda.

    Args:
        forward_func (Callable): maps a ``N x C x *spatial`` tensor to
            ``N x n_outputs`` (or ``N``) predictions.
        inputs (torch.Tensor): one input, ``1 x C x *spatial``.
        attribution (numpy.ndarray or torch.Tensor): map of shape
            ``(*spatial)``, ``(C, *spatial)`` or ``(1, C, *spatial)``
            (channels are summed), or ``(1, *spatial)``/``(1, 1, *spatial)``.
        target (int or None): output index; ``None`` if the model has a
            single output.
        baseline (float or torch.Tensor, optional): value of deleted voxels,
            a scalar or a tensor broadcastable to ``inputs`` (e.g. a mean
            image). Default: ``0.0``
        fractions (sequence of float, optional): strictly increasing
            fractions of voxels in ``[0, 1]``, at least two.
            Default: :data:`DEFAULT_FRACTIONS`
        output_std (float, optional): :math:`\sigma` of the output over the
            training set. Default: ``1.0``
        random_orderings (int, optional): number :math:`R` of random voxel
            orders evaluated as reference (their mean curves and AUCs are
            returned). Default: ``0``
        generator (None, int or torch.Generator, optional): source of the
            random orders; an int is a seed. Default: ``None`` (torch's
            global generator)
        batch_size (int, optional): perturbed inputs per forward call.
            Default: ``8``
        show_progress (bool, optional): show a tqdm bar over the forward
            calls. Default: ``False``

    Returns:
        dict: with keys

        - ``"fractions"``: ``(F,)`` the fractions;
        - ``"n_voxels"``: ``(F,)`` int, the :math:`k_f` perturbed voxels;
        - ``"deletion"``, ``"insertion"``: ``(F,)`` curves :math:`D`, :math:`I`;
        - ``"deletion_auc"``, ``"insertion_auc"``: float areas;
        - ``"random_deletion"``, ``"random_insertion"``: ``(F,)`` mean curves
          of the random orders, ``None`` if ``random_orderings == 0``;
        - ``"random_deletion_auc"``, ``"random_insertion_auc"``: their mean
          areas (float, ``None`` if ``random_orderings == 0``);
        - ``"random_deletion_aucs"``, ``"random_insertion_aucs"``: ``(R,)``
          area of each random order (``None`` if ``random_orderings == 0``);
        - ``"output"``, ``"baseline_output"``: :math:`F(x)` and :math:`F(b)`.

    Examples::

        >>> import torch
        >>> w = torch.rand(1, 1, 7, 8, 9)
        >>> f = lambda x: (x * w).flatten(1).sum(1, keepdim=True)
        >>> x = torch.rand(1, 1, 7, 8, 9)
        >>> res = deletion_insertion(f, x, (w * x)[0, 0], target=0, random_orderings=2, generator=0)
        >>> res["deletion_auc"] >= res["random_deletion_auc"]
        True
    """
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if inputs.ndim < 3 or inputs.shape[0] != 1:
        raise ValueError(
            f"inputs must have shape 1 x C x *spatial (one input), got {tuple(inputs.shape)}"
        )
    if not callable(forward_func):
        raise TypeError(f"forward_func must be callable, got {type(forward_func).__name__}")
    if target is not None and (not isinstance(target, numbers.Integral) or isinstance(target, bool)):
        raise TypeError(f"target must be an int or None, got {target!r}")
    if not isinstance(random_orderings, numbers.Integral) or random_orderings < 0:
        raise ValueError(f"random_orderings must be an int >= 0, got {random_orderings!r}")
    if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    sigma = float(output_std)
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"output_std must be positive and finite, got {output_std!r}")
    frac = _check_fractions(fractions)

    _, channels, *spatial = inputs.shape
    spatial = tuple(int(s) for s in spatial)
    a = _spatial_attribution(attribution, int(channels), spatial)
    n_vox = a.size
    ks = np.floor(frac * n_vox + 0.5).astype(np.int64)

    x = inputs.detach()
    try:
        b = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
        b = torch.broadcast_to(b, x.shape)
    except (RuntimeError, TypeError, ValueError) as err:
        shape = tuple(baseline.shape) if hasattr(baseline, "shape") else "a scalar"
        raise ValueError(
            f"baseline of shape {shape} cannot be broadcast to inputs of shape "
            f"{tuple(x.shape)}: {err}"
        ) from None

    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        gen = torch.Generator().manual_seed(int(generator))
    elif generator is None or isinstance(generator, torch.Generator):
        gen = generator
    else:
        raise TypeError(f"generator must be None, an int seed or a torch.Generator, got {generator!r}")

    # Orders: the map's (stable sort on -a), then the random references.
    orders = [np.argsort(-a.ravel(), kind="stable")]
    for _ in range(int(random_orderings)):
        perm = torch.randperm(n_vox, generator=gen, device=gen.device if gen is not None else "cpu")
        orders.append(perm.cpu().numpy())

    n_calls = 1 + sum(-(-2 * len(ks) // batch_size) for _ in orders)
    progress = None
    if show_progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=n_calls, desc="deletion/insertion", unit="batch")

    curves = []  # per order: (deletion, insertion)
    with torch.no_grad():
        ref = _outputs(forward_func, torch.cat([x, b], dim=0), target)
        if progress is not None:
            progress.update(1)
        f_x, f_b = float(ref[0]), float(ref[1])
        view = (1, 1) + spatial
        for order in orders:
            rank = torch.as_tensor(_rank_of_voxels(order), device=x.device).reshape(view)
            jobs = [("del", k) for k in ks] + [("ins", k) for k in ks]
            values = np.empty(len(jobs), dtype=np.float64)
            for start in range(0, len(jobs), batch_size):
                chunk = jobs[start:start + batch_size]
                k_t = torch.as_tensor([k for _, k in chunk], device=x.device).reshape(
                    (-1, 1) + (1,) * len(spatial)
                )
                top = rank < k_t  # B x 1 x *spatial, broadcast over channels
                is_del = torch.as_tensor([kind == "del" for kind, _ in chunk], device=x.device)
                is_del = is_del.reshape((-1, 1) + (1,) * len(spatial))
                # Deletion: baseline where top, else x. Insertion: x where top, else baseline.
                take_baseline = torch.where(is_del, top, ~top)
                batch = torch.where(take_baseline, b, x)
                values[start:start + len(chunk)] = _outputs(forward_func, batch, target)
                if progress is not None:
                    progress.update(1)
            change = np.abs(values - f_x) / sigma
            curves.append((change[: len(ks)], change[len(ks):]))
    if progress is not None:
        progress.close()

    deletion, insertion = curves[0]
    result = {
        "fractions": frac,
        "n_voxels": ks,
        "deletion": deletion,
        "insertion": insertion,
        "deletion_auc": _normalised_auc(deletion, frac),
        "insertion_auc": _normalised_auc(insertion, frac),
        "random_deletion": None,
        "random_insertion": None,
        "random_deletion_auc": None,
        "random_insertion_auc": None,
        "random_deletion_aucs": None,
        "random_insertion_aucs": None,
        "output": f_x,
        "baseline_output": f_b,
    }
    if random_orderings:
        rand_del = np.stack([c[0] for c in curves[1:]])
        rand_ins = np.stack([c[1] for c in curves[1:]])
        del_aucs = np.array([_normalised_auc(c, frac) for c in rand_del])
        ins_aucs = np.array([_normalised_auc(c, frac) for c in rand_ins])
        result.update(
            random_deletion=rand_del.mean(axis=0),
            random_insertion=rand_ins.mean(axis=0),
            random_deletion_auc=float(del_aucs.mean()),
            random_insertion_auc=float(ins_aucs.mean()),
            random_deletion_aucs=del_aucs,
            random_insertion_aucs=ins_aucs,
        )
    return result


# ---------------------------------------------------------------------------
# Sanity: model-parameter randomisation
# ---------------------------------------------------------------------------
def spearman(a: ArrayLike, b: ArrayLike, *, abs: bool = False) -> float:
    r"""Spearman rank correlation of two maps (flattened).

    .. math::

        \rho(a, b) = \operatorname{corr}\big(R(a), R(b)\big)

    the Pearson correlation of the ranks (ties receive their average rank).
    With ``abs=True`` the ranks of :math:`|a|` and :math:`|b|` are used, as in
    Adebayo et al. (2018), who report both variants because the sign of many
    attribution methods flips under randomisation while their magnitude
    pattern persists.

    Args:
        a (numpy.ndarray or torch.Tensor): a map.
        b (numpy.ndarray or torch.Tensor): a map of the same spatial shape.
        abs (bool, optional): compare absolute values. Default: ``False``

    Returns:
        float: :math:`\rho \in [-1, 1]`, or ``nan`` when a map is constant
        (its ranks have no variance, so no correlation is defined).

    Examples::

        >>> import numpy as np
        >>> a = np.arange(24.0).reshape(2, 3, 4)
        >>> spearman(a, a ** 3), spearman(a, -a), spearman(-a, a, abs=True)
        (1.0, -1.0, 1.0)
    """
    x, y = _pair(_as_map(a, "a"), _as_map(b, "b"), "a", "b")
    if abs:
        x, y = np.abs(x), np.abs(y)
    rx = rankdata(x.ravel())
    ry = rankdata(y.ravel())
    rx -= rx.mean()
    ry -= ry.mean()
    denom = np.sqrt(np.dot(rx, rx) * np.dot(ry, ry))
    if denom == 0.0:
        return float("nan")
    return float(np.clip(np.dot(rx, ry) / denom, -1.0, 1.0))


def _default_layers(model: torch.nn.Module) -> list:
    """Names of modules owning parameters, output end first."""
    names = [
        name
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    ]
    return names[::-1]


def _resolve_layers(model: torch.nn.Module, layers) -> list:
    if layers is None:
        names = _default_layers(model)
        if not names:
            raise ValueError("model has no parameters; nothing to randomise")
        return names
    if isinstance(layers, (str, torch.nn.Module)):
        layers = [layers]
    by_name = dict(model.named_modules())
    by_id = {id(m): n for n, m in model.named_modules()}
    names = []
    for layer in layers:
        if isinstance(layer, torch.nn.Module):
            if id(layer) not in by_id:
                raise ValueError(f"layer {type(layer).__name__} is not a sub-module of the model")
            name = by_id[id(layer)]
        elif isinstance(layer, str):
            if layer not in by_name:
                raise ValueError(
                    f"layer {layer!r} is not a module of the model; expected one of "
                    f"{[n for n in by_name if n][:20]}"
                )
            name = layer
        else:
            raise TypeError(f"layers must hold module names or modules, got {layer!r}")
        if not any(True for _ in by_name[name].parameters()):
            raise ValueError(f"layer {name!r} has no parameters to randomise")
        names.append(name)
    if not names:
        raise ValueError("layers is empty; expected at least one layer to randomise")
    return names


def _reinitialise(module: torch.nn.Module, subtree: bool) -> None:
    """Re-initialise parameters (and normalisation statistics) in place.

    ``subtree=False`` touches only the parameters the module owns directly;
    ``subtree=True`` also every sub-module (a block named by the user).
    """
    for sub in module.modules() if subtree else [module]:
        own = list(sub.parameters(recurse=False))
        is_leaf = not any(True for _ in sub.children())
        reset = getattr(sub, "reset_parameters", None)
        if own and is_leaf and callable(reset):
            reset()
        elif own:
            with torch.no_grad():
                for p in own:
                    std = float(p.std()) if p.numel() > 1 else 0.0
                    p.normal_(0.0, std if np.isfinite(std) and std > 0 else 0.01)
        stats = getattr(sub, "reset_running_stats", None)
        if callable(stats):
            stats()


def cascading_randomization(
    model: torch.nn.Module,
    attribute_fn: Callable,
    inputs: torch.Tensor,
    target,
    *,
    layers=None,
    seed: int = 0,
    abs: bool = True,
    show_progress: bool = False,
):
    r"""Cascading model-parameter randomisation test (Adebayo et al. 2018).

    A map that explains the *model* must change when the model's learned
    weights are destroyed. On a deep copy of ``model`` the parameterised
    layers are re-initialised one after another, from the output end to the
    input end, so that after step :math:`j` the top :math:`j` layers are
    random; after each step the map is recomputed and compared with the
    original map by the Spearman rank correlation (:func:`spearman`). A
    method passes when the correlation drops quickly; a map that stays
    correlated after the top layers are random depends on the input more
    than on the model (e.g. edge detection). **Lower is better.**

    Re-initialisation: each layer's ``reset_parameters()`` (PyTorch's default
    initialiser for that layer) is called with torch's RNG seeded to
    ``seed + step`` inside ``torch.random.fork_rng`` (the caller's RNG state is
    untouched); a module without ``reset_parameters`` (or one with children)
    gets its own parameters drawn from :math:`\mathcal{N}(0, s^2)`, :math:`s`
    the standard deviation of the learned values (0.01 if undefined).
    BatchNorm-style layers also have their running statistics reset
    (``reset_running_stats()``): otherwise the learned mean and variance
    would survive the randomisation. Note that ``reset_parameters()`` of a
    normalisation layer sets :math:`\gamma = 1, \beta = 0`, i.e. the layer
    becomes the identity in eval mode rather than random.

    The user's ``model`` is never modified or passed to ``attribute_fn``; the
    original map is computed on an unmodified copy.

    Args:
        model (torch.nn.Module): the trained model.
        attribute_fn (Callable): ``attribute_fn(model_copy, inputs, target)``
            returning a map (numpy array or tensor) of a fixed shape.
        inputs (torch.Tensor): the input passed to ``attribute_fn``.
        target (Any): passed to ``attribute_fn`` unchanged.
        layers (sequence of str or torch.nn.Module, optional): layers to
            randomise, in the order given (list them from the output end for a
            cascading test). ``None`` selects every module that owns
            parameters directly (the leaf layers), in reverse registration
            order. Default: ``None``
        seed (int, optional): base seed of the re-initialisation.
            Default: ``0``
        abs (bool, optional): correlate absolute values (Adebayo et al.'s
            main variant). Default: ``True``
        show_progress (bool, optional): tqdm bar over the steps.
            Default: ``False``

    Returns:
        pandas.DataFrame: one row per step with columns ``step`` (1-based),
        ``layer`` (the module name randomised at that step; all earlier
        rows' layers stay random) and ``spearman`` (correlation with the
        original map).

    Examples::

        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 5 * 6, 1))
        >>> def grad_x_input(m, x, t):
        ...     x = x.clone().requires_grad_(True)
        ...     m(x)[:, t].sum().backward()
        ...     return (x.grad * x)[0, 0]
        >>> df = cascading_randomization(net, grad_x_input, torch.rand(1, 1, 4, 5, 6), 0)
        >>> list(df["layer"])
        ['3', '0']
    """
    import pandas as pd

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(attribute_fn):
        raise TypeError(f"attribute_fn must be callable, got {type(attribute_fn).__name__}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    names = _resolve_layers(model, layers)

    work = copy.deepcopy(model)
    original = _as_map(attribute_fn(work, inputs, target), "attribute_fn output")
    modules = dict(work.named_modules())
    cuda_devices = sorted(
        {p.device.index or 0 for p in work.parameters() if p.device.type == "cuda"}
    )

    steps = names
    if show_progress:
        from tqdm.auto import tqdm

        steps = tqdm(names, desc="cascading randomisation", unit="layer")
    rows = []
    for step, name in enumerate(steps, start=1):
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(int(seed) + step)
            _reinitialise(modules[name], subtree=layers is not None)
        current = _as_map(attribute_fn(work, inputs, target), "attribute_fn output")
        if current.shape != original.shape:
            raise ValueError(
                f"attribute_fn returned shape {current.shape} after randomising {name!r}, "
                f"but {original.shape} for the original model; expected a fixed shape"
            )
        rows.append({"step": step, "layer": name, "spearman": spearman(original, current, abs=abs)})
    return pd.DataFrame(rows, columns=["step", "layer", "spearman"])
