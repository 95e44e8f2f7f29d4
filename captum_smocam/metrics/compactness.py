"""Compactness scores: is a map one blob near the structure, or many scattered ones?

* :func:`peak_distance_mm` -- how far the map's maximum lies from the
  structure (in mm); ``peak_distance_mm(a, S) <= r`` is the pointing game with
  a margin ``r`` (:func:`~captum_smocam.metrics.pointing_game`);
* :func:`n_components` -- connected blobs above half the map's maximum.

With :func:`~captum_smocam.metrics.mass_inside_dilated` at a wide margin
(30 mm in the benchmarks) they say whether the mass that misses the structure
stays near it. Definitions and directions: ``docs/metrics.md``.
"""
from __future__ import annotations

import numbers

import numpy as np
from scipy import ndimage

from ._inputs import ArrayLike, _as_map, _as_mask, _check_not_empty, _pair, _spacing

__all__ = ["peak_distance_mm", "n_components", "DEFAULT_COMPONENT_FRACTION"]

#: :func:`n_components` counts the blobs above this fraction of the map's maximum.
DEFAULT_COMPONENT_FRACTION = 0.5


def peak_distance_mm(attribution: ArrayLike, mask: ArrayLike, spacing=1.0) -> float:
    r"""Distance in mm from the map's maximum to the nearest voxel of the structure.

    .. math::

        d(a, S) = \max_{v \in \arg\max a} \; \min_{u \in S} \lVert (v - u) \odot s \rVert_2

    with :math:`s` the voxel spacing. 0 when the maximum lies in the
    structure; lower is better. When several voxels attain the maximum the
    farthest counts (the strict tie rule of
    :func:`~captum_smocam.metrics.pointing_game`, so that a constant map is
    not credited with a voxel it happens to share the maximum with); hence
    ``peak_distance_mm(a, S) <= r`` if and only if
    ``pointing_game(a, S, margin_mm=r)``. The issue 19 criterion "the map's
    maximum lies within 6 mm of the structure" is that test with ``r = 6``.

    Args:
        attribution (numpy.ndarray or torch.Tensor): map on the mask's grid.
        mask (numpy.ndarray or torch.Tensor): boolean (or 0/1) mask of the structure.
        spacing (float or sequence of float, optional): voxel size in mm, one
            value or one per axis. Default: ``1.0``

    Returns:
        float: the distance in the units of ``spacing``, ``>= 0``.

    Raises:
        ValueError: shapes differ, the mask is empty, the map is not finite, bad spacing.

    Examples::

        >>> import numpy as np
        >>> a = np.zeros((7, 8, 9)); a[1, 2, 7] = 1.0
        >>> m = np.zeros((7, 8, 9), bool); m[1, 2, 3] = True
        >>> peak_distance_mm(a, m), peak_distance_mm(a, m, spacing=(1.0, 1.0, 2.5))
        (4.0, 10.0)
    """
    a, m = _pair(_as_map(attribution, "attribution"), _as_mask(mask, "mask"), "attribution", "mask")
    _check_not_empty(m, "mask")
    distance = ndimage.distance_transform_edt(~m, sampling=_spacing(spacing, m.ndim))
    return float(distance[a == a.max()].max())


def n_components(attribution: ArrayLike, *, fraction: float = DEFAULT_COMPONENT_FRACTION,
                 connectivity=None) -> int:
    r"""Number of connected components of the map above a fraction of its maximum.

    The voxels :math:`\{v : a_v > f \max_u a_u\}` are labelled with
    ``scipy.ndimage.label``; by default two voxels connect when they share a
    face, an edge or a corner (26-connectivity in 3-D, 8 in 2-D). 1 is one
    blob, the most compact a map can be; lower is better (a map that finds
    one structure should not be split into many islands). A map whose
    maximum is not positive has no blob: 0.

    Args:
        attribution (numpy.ndarray or torch.Tensor): map of shape ``(*spatial)``.
        fraction (float, optional): :math:`f` in ``[0, 1)``. Default:
            :data:`DEFAULT_COMPONENT_FRACTION` (half the maximum)
        connectivity (int, optional): ``scipy.ndimage.generate_binary_structure``'s
            connectivity, 1 (faces: 6 in 3-D) to the number of dimensions (26
            in 3-D). Default: None (the number of dimensions)

    Returns:
        int: the number of components, ``>= 0``.

    Raises:
        ValueError: ``fraction`` or ``connectivity`` out of range, or a non-finite map.

    Examples::

        >>> import numpy as np
        >>> a = np.zeros((7, 8, 9)); a[1, 1, 1] = 1.0; a[2, 2, 2] = 0.8; a[5, 6, 7] = 0.6; a[5, 1, 1] = 0.2
        >>> n_components(a), n_components(a, connectivity=1), n_components(a, fraction=0.1)
        (2, 3, 3)
    """
    a = _as_map(attribution, "attribution")
    if not isinstance(fraction, numbers.Real) or isinstance(fraction, bool) or not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be a number in [0, 1), got {fraction!r}")
    rank = a.ndim if connectivity is None else connectivity
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= a.ndim:
        raise ValueError(f"connectivity must be an integer in [1, {a.ndim}] for a {a.ndim}-D map, got {connectivity!r}")
    peak = float(a.max())
    if peak <= 0.0:
        return 0
    _, count = ndimage.label(a > fraction * peak, structure=ndimage.generate_binary_structure(a.ndim, int(rank)))
    return int(count)
