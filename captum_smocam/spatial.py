"""Maps on grids: conversion to arrays, upsampling, and resampling onto another grid.

Every module that moves a map between grids does it here, for any number of
spatial dimensions (a grid is read from the array's shape, ``b, c, *spatial``
for a batch):

* :func:`to_numpy` and :func:`as_spatial_array` -- a tensor, array or nibabel
  image as a NumPy array of its spatial dimensions;
* :data:`INTERPOLATION_MODES`, :func:`upsample` and :func:`upsample_to` -- a
  map at a layer's (coarser) resolution stretched over a finer grid with the
  same axes, the call Captum's ``LayerAttribution.interpolate`` makes
  (``align_corners=False``: each coarse voxel is the centre of the block of
  fine voxels it covers);
* :func:`resample` -- a volume sampled at the voxel centres of any other grid,
  in world (millimetre) coordinates given by the two grids' affines
  (``scipy.ndimage.affine_transform``);
* :class:`GridArray` -- an array that knows its grid (``.affine``), as
  :func:`captum_smocam.nifti.load_label_map` returns labels, so that region
  tables can resample in world coordinates or refuse.

Data flow: SMOCAM mask (layer grid) --:func:`upsample`--> model grid
--:func:`resample`--> the scan's own grid (:func:`captum_smocam.nifti.save_map`)
or a label map's grid (region tables).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

__all__ = [
    "INTERPOLATION_MODES",
    "RESAMPLING_ORDERS",
    "to_numpy",
    "as_spatial_array",
    "upsample",
    "upsample_to",
    "resample",
    "GridArray",
]

#: The ``torch.nn.functional.interpolate`` mode of a linear upsampling, by number of spatial dimensions.
INTERPOLATION_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}

#: Spline order of :func:`resample` for each interpolation name.
RESAMPLING_ORDERS = {"linear": 1, "nearest": 0}


def to_numpy(x, what: str = "input", *, images: bool = True, sequences: bool = True) -> np.ndarray:
    """``x`` as a NumPy array: a tensor is detached and copied to the CPU, an array is returned as is.

    Args:
        x (numpy.ndarray, torch.Tensor, nibabel image, list or tuple): the data.
        what (str, optional): name used in error messages. Default: ``"input"``
        images (bool, optional): accept a nibabel image (its data array). Default: True
        sequences (bool, optional): accept a (nested) list or tuple. Default: True

    Returns:
        numpy.ndarray: the data.

    Raises:
        TypeError: ``x`` is of another type (or of a type not accepted here).

    Examples::

        >>> to_numpy(torch.ones(2, 3)).shape
        (2, 3)
        >>> to_numpy([1, 2], "attribution", images=False, sequences=False)
        Traceback (most recent call last):
        ...
        TypeError: attribution must be a numpy.ndarray or a torch.Tensor, got list
    """
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if images and hasattr(x, "dataobj") and hasattr(x, "affine"):  # nibabel image
        return np.asarray(x.dataobj)
    if sequences and isinstance(x, (list, tuple)):
        return np.asarray(x)
    kinds = ["a numpy.ndarray", "a torch.Tensor"] + ["a nibabel image"] * images + ["a list"] * sequences
    raise TypeError(f"{what} must be {', '.join(kinds[:-1])} or {kinds[-1]}, got {type(x).__name__}")


def as_spatial_array(x, spatial_ndim: Optional[int] = None, *, what: str = "attribution") -> np.ndarray:
    """Return ``x`` as a NumPy array with only its spatial dimensions.

    Leading dimensions of size 1 (batch, channel) are dropped, so
    ``(1, 1, X, Y, Z)``, ``(1, X, Y, Z)`` and ``(X, Y, Z)`` all give
    ``(X, Y, Z)``. A batch of several examples is refused: pick one with
    ``attr[i]`` first.

    Args:
        x (numpy.ndarray, torch.Tensor or nibabel image): the map.
        spatial_ndim (int, optional): number of spatial dimensions wanted. When
            ``None``, 2-D input stays 2-D, 3-D stays 3-D, and 4-D or 5-D input
            is squeezed to 3-D. Default: ``None``
        what (str, optional): name used in error messages. Default: ``"attribution"``

    Returns:
        numpy.ndarray: the squeezed array (a view where possible).

    Examples::

        >>> as_spatial_array(torch.zeros(1, 1, 7, 8, 9)).shape
        (7, 8, 9)
        >>> as_spatial_array(np.zeros((1, 8, 9)), spatial_ndim=2).shape
        (8, 9)
    """
    arr = to_numpy(x, what)
    if spatial_ndim is None:
        if arr.ndim in (2, 3):
            return arr
        spatial_ndim = 3
    if spatial_ndim < 1:
        raise ValueError(f"spatial_ndim must be >= 1; got {spatial_ndim}")
    if arr.ndim < spatial_ndim:
        raise ValueError(
            f"{what} of shape {tuple(arr.shape)} has fewer than the {spatial_ndim} spatial "
            f"dimensions expected"
        )
    lead = arr.shape[: arr.ndim - spatial_ndim]
    if any(s != 1 for s in lead):
        raise ValueError(
            f"{what} of shape {tuple(arr.shape)} has leading dimensions {tuple(lead)}; expected "
            f"{spatial_ndim} spatial dimensions preceded only by size-1 batch/channel dimensions "
            f"(select one example, e.g. attr[i], first)"
        )
    return arr.reshape(arr.shape[arr.ndim - spatial_ndim:])


def upsample(x: Tensor, size: Sequence[int], mode: str = "linear", *, what: str = "mask") -> Tensor:
    """Upsample a batch of maps ``N x C x <spatial dims>`` to the spatial size ``size``.

    ``mode="linear"`` is linear, bilinear or trilinear by the number of spatial
    dimensions (:data:`INTERPOLATION_MODES`) with ``align_corners=False``, the
    same call as Captum's ``LayerAttribution.interpolate(x, size, mode)``;
    ``"nearest"`` repeats each voxel.

    Args:
        x (Tensor): ``N x C x <1 to 3 spatial dims>``.
        size (sequence of int): target spatial size, e.g. ``inputs.shape[2:]``.
        mode (str, optional): ``"linear"`` or ``"nearest"``. Default: ``"linear"``
        what (str, optional): name used in error messages. Default: ``"mask"``

    Returns:
        Tensor: ``N x C x size``.

    Examples::

        >>> upsample(torch.ones(2, 1, 4, 4, 5), (7, 8, 9)).shape
        torch.Size([2, 1, 7, 8, 9])
    """
    n_spatial = x.dim() - 2
    size = tuple(int(s) for s in size)
    if n_spatial not in INTERPOLATION_MODES or len(size) != n_spatial:
        raise ValueError(
            f"cannot upsample a {what} of shape {tuple(x.shape)} to size {size}: "
            "expected N x C x 1-3 spatial dims and as many target sizes"
        )
    if mode == "linear":
        return F.interpolate(x, size=size, mode=INTERPOLATION_MODES[n_spatial], align_corners=False)
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    raise ValueError(f"mode must be 'linear' or 'nearest'; got {mode!r}")


def upsample_to(x, shape: Sequence[int], *, mode: str = "linear", what: str = "attribution") -> np.ndarray:
    """Upsample one map to ``shape`` with :func:`upsample`; a NumPy array in, a NumPy array out.

    A map computed at a layer's resolution is stretched over the input grid. A
    map already of shape ``shape`` is returned unchanged (as ``float32``).

    Args:
        x (numpy.ndarray or torch.Tensor): spatial map, ``len(shape)`` dims
            (leading size-1 dims are dropped).
        shape (sequence of int): target spatial shape; every dimension must be
            at least the map's (a larger map is refused, since it usually
            means swapped axes).
        mode (str, optional): ``"linear"`` (the right one of linear, bilinear
            or trilinear for the number of dims) or ``"nearest"``.
            Default: ``"linear"``
        what (str, optional): name used in error messages. Default: ``"attribution"``

    Returns:
        numpy.ndarray: ``float32`` array of shape ``shape``.

    Examples::

        >>> upsample_to(np.ones((4, 4, 5)), (7, 8, 9)).shape
        (7, 8, 9)
    """
    shape = tuple(int(s) for s in shape)
    arr = as_spatial_array(x, len(shape), what=what).astype(np.float32, copy=False)
    if arr.shape == shape:
        return arr
    if any(a > s for a, s in zip(arr.shape, shape)):
        raise ValueError(
            f"{what} of spatial shape {arr.shape} is larger than the target grid {shape} in at "
            f"least one axis; expected a map at the target's resolution or coarser (same axis order)"
        )
    if mode not in ("linear", "nearest"):
        raise ValueError(f"mode must be 'linear' or 'nearest'; got {mode!r}")
    t = torch.from_numpy(np.ascontiguousarray(arr))[None, None]
    return upsample(t, shape, mode, what=what)[0, 0].numpy()


def _inside(dst_to_src: np.ndarray, src_shape: Sequence[int], dst_shape: Sequence[int]) -> np.ndarray:
    """Target voxels whose centre maps within ``[-0.5, n - 0.5]`` along every source axis."""
    ndim = len(dst_shape)
    index = np.ogrid[tuple(slice(0, int(n)) for n in dst_shape)]
    inside = np.ones(tuple(int(n) for n in dst_shape), dtype=bool)
    for axis in range(ndim):
        coord = dst_to_src[axis, ndim]
        for j in range(ndim - 1, -1, -1):
            coord = coord + dst_to_src[axis, j] * index[j]
        inside &= (coord >= -0.5) & (coord <= src_shape[axis] - 0.5)
    return inside


def resample(
    data: np.ndarray,
    src_affine: np.ndarray,
    dst_affine: np.ndarray,
    dst_shape: Sequence[int],
    *,
    order: int = 1,
) -> Tuple[np.ndarray, float]:
    """Sample ``data`` (a grid with voxel -> world matrix ``src_affine``) at the voxel centres of another grid.

    For every target voxel ``v`` the source is read at
    ``inv(src_affine) @ dst_affine @ v`` (``scipy.ndimage.affine_transform``,
    linear or nearest-neighbour, no spline prefilter). A target voxel whose
    centre lies outside the source's field of view -- further than half a
    voxel beyond its edge voxels -- is 0; inside it, and within half a voxel of
    the edge, the edge value is used.

    Args:
        data (numpy.ndarray): the source volume, ``d`` spatial dimensions.
        src_affine (array-like): ``(d+1) x (d+1)`` voxel -> world matrix of ``data``.
        dst_affine (array-like): ``(d+1) x (d+1)`` voxel -> world matrix of the target grid.
        dst_shape (sequence of int): the target grid's shape (``d`` values).
        order (int, optional): 1 (linear) or 0 (nearest neighbour). Default: 1

    Returns:
        tuple: ``(values, coverage)``: ``float32`` array of shape ``dst_shape``,
        and the fraction of target voxels inside the source's field of view.

    Examples::

        >>> data = np.arange(7 * 8 * 9, dtype=np.float32).reshape(7, 8, 9)
        >>> shifted = np.eye(4); shifted[0, 3] = 2.0        # the target starts 2 voxels further along x
        >>> out, coverage = resample(data, np.eye(4), shifted, (7, 8, 9))
        >>> bool((out[:5] == data[2:]).all()), bool((out[5:] == 0).all()), round(coverage, 4)
        (True, True, 0.7143)
    """
    data = np.asarray(data, dtype=np.float32)
    ndim = data.ndim
    dst_shape = tuple(int(n) for n in dst_shape)
    src_affine, dst_affine = (np.asarray(a, dtype=np.float64) for a in (src_affine, dst_affine))
    if len(dst_shape) != ndim or src_affine.shape != (ndim + 1,) * 2 or dst_affine.shape != (ndim + 1,) * 2:
        raise ValueError(
            f"resample needs a {ndim}-D target shape and two {ndim + 1} x {ndim + 1} affines for data of shape "
            f"{data.shape}; got shape {dst_shape} and affines {src_affine.shape}, {dst_affine.shape}"
        )
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest) or 1 (linear); got {order!r}")
    dst_to_src = np.linalg.inv(src_affine) @ dst_affine
    out = ndimage.affine_transform(data, dst_to_src[:ndim, :ndim], offset=dst_to_src[:ndim, ndim],
                                   output_shape=dst_shape, output=np.float32, order=order, mode="nearest",
                                   prefilter=False)
    inside = _inside(dst_to_src, data.shape, dst_shape)
    out[~inside] = 0.0
    return out, float(inside.sum()) / float(max(inside.size, 1))


def gaussian_blur(x: Tensor, sigma: Sequence[float], truncate: float = 3.0) -> Tensor:
    """Separable Gaussian blur of ``N x C x <1-3 spatial dims>`` with one standard deviation (voxels) per axis.

    Edges are replicated; ``sigma`` 0 leaves an axis alone. Differentiable; works in the input's dtype
    and device.

    Args:
        x (Tensor): ``N x C x <spatial dims>``.
        sigma (sequence of float): one standard deviation per spatial dim, in voxels.
        truncate (float, optional): the kernel reaches ``truncate * sigma`` voxels. Default: 3.0

    Returns:
        Tensor: the same shape as ``x``.

    Examples::

        >>> import torch
        >>> x = torch.zeros(1, 1, 7, 8, 9); x[0, 0, 3, 4, 4] = 1.0
        >>> y = gaussian_blur(x, [1.0, 1.0, 1.0])
        >>> y.shape, round(float(y.sum()), 4), bool(y[0, 0, 3, 4, 4] < 1)
        (torch.Size([1, 1, 7, 8, 9]), 1.0, True)
    """
    spatial = x.dim() - 2
    if len(sigma) != spatial:
        raise ValueError(f"sigma has {len(sigma)} values for {spatial} spatial dims: {list(sigma)}")
    out = x
    for a, s in enumerate(sigma):
        if s < 0 or not np.isfinite(s):
            raise ValueError(f"sigma must be finite and >= 0, got {list(sigma)}")
        if s == 0:
            continue
        radius = max(1, int(truncate * s + 0.5))
        t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-0.5 * (t / s) ** 2)
        k = k / k.sum()
        moved = out.movedim(2 + a, -1)
        shape = moved.shape
        flat = moved.reshape(-1, 1, shape[-1])
        flat = torch.nn.functional.pad(flat, (radius, radius), mode="replicate")
        flat = torch.nn.functional.conv1d(flat, k.reshape(1, 1, -1))
        out = flat.reshape(shape).movedim(-1, 2 + a)
    return out


class GridArray(np.ndarray):
    """A NumPy array that carries the 4 x 4 voxel -> world affine of its grid as ``.affine``.

    Arrays derived from it element by element on the same grid (``labels == 17``,
    ``labels.astype(int)``) keep the affine; anything that moves voxels
    (flips, transposes, slices, another shape) gets ``affine = None``, so a
    wrong grid is never carried along.

    Examples::

        >>> a = GridArray(np.zeros((7, 8, 9), dtype=np.int32), np.diag([-2.0, 2.0, 2.0, 1.0]))
        >>> float(a.astype(np.int64).affine[0, 0]), (a == 0).affine is not None
        (-2.0, True)
        >>> a[::-1].affine is None, a[:3].affine is None
        (True, True)
    """

    def __new__(cls, data, affine):
        obj = np.asarray(data).view(cls)
        obj.affine = np.asarray(affine, dtype=np.float64)
        return obj

    def __array_finalize__(self, obj) -> None:
        affine = getattr(obj, "affine", None)
        same_grid = (
            affine is not None and isinstance(obj, np.ndarray) and obj.shape == self.shape
            and all(a * self.itemsize == b * obj.itemsize for a, b in zip(obj.strides, self.strides))
        )
        self.affine = affine if same_grid else None

    def __reduce__(self):  # pickled as the plain array it is (the grid is not trusted across processes)
        return np.asarray(self).__reduce__()
