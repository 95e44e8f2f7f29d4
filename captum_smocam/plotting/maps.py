"""Attribution maps drawn over a scan: cuts through a volume, one method or several side by side.

:func:`plot_attribution` draws one map (axial, coronal and sagittal cuts, or
any of them); :func:`plot_comparison` one row per method, cut at the same
place. Display conventions and ``cut_coords`` units: see
:mod:`captum_smocam.plotting`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..spatial import as_spatial_array, resample, upsample_to
from ._figures import _finish

__all__ = ["plot_attribution", "plot_comparison"]

#: Cut axis and name of each display letter (nilearn's naming).
_VIEWS = {"x": (0, "sagittal"), "y": (1, "coronal"), "z": (2, "axial")}
#: ``display_mode="ortho"``: axial, coronal, sagittal.
_ORTHO = ("z", "y", "x")
_PANEL_INCHES = 2.6
_OUTLINE_COLOR = "cyan"


def _is_image(x) -> bool:
    return hasattr(x, "get_fdata") and hasattr(x, "header") and hasattr(x, "affine")


class _Display:
    """The display grid: a background (or none) re-oriented to RAS+ when its affine is known.

    ``source_shape`` is the background's shape as given; :meth:`orient` re-orders an array of that
    shape (a map or outline in the background's axis order) as the background was re-ordered
    (``nibabel.as_closest_canonical``: axis permutations and flips only), so that the right
    hemisphere (x > 0) is drawn on the right for LAS, LPS or oblique scans alike.
    """

    def __init__(self, bg_img) -> None:
        self.bg = self.zooms = self.affine = self.source_shape = None
        self.ornt = None
        if bg_img is None:
            return
        if _is_image(bg_img):
            data = as_spatial_array(np.asarray(bg_img.get_fdata(dtype=np.float32)), None, what="bg_img")
            self.source_shape = data.shape
            if data.ndim == 3:
                self.source_affine = np.asarray(bg_img.affine, dtype=np.float64)
                self.ornt = nib.io_orientation(self.source_affine)
                data = nib.orientations.apply_orientation(data, self.ornt)
                self.affine = self.source_affine @ nib.orientations.inv_ornt_aff(self.ornt, self.source_shape)
                self.zooms = tuple(float(z) for z in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))
            else:
                self.zooms = tuple(float(z) for z in bg_img.header.get_zooms()[: data.ndim])
            self.bg = np.nan_to_num(np.ascontiguousarray(data, dtype=np.float32))
        else:
            data = as_spatial_array(bg_img, None, what="bg_img")
            self.source_shape = data.shape
            self.bg = np.nan_to_num(np.asarray(data, dtype=np.float32))

    def orient(self, arr: Optional[np.ndarray]) -> Optional[np.ndarray]:
        if arr is None or self.ornt is None:
            return arr
        return np.ascontiguousarray(nib.orientations.apply_orientation(arr, self.ornt))

    def map(self, attr, what: str = "attr") -> np.ndarray:
        """``attr`` on the display grid: resampled in world coordinates if it is an image, else
        upsampled to the background's shape (same axis order) and re-oriented with it."""
        if _is_image(attr) and len(attr.shape) >= 3:
            img = attr if len(attr.shape) == 3 else attr.slicer[(slice(None),) * 3 + (0,) * (len(attr.shape) - 3)]
            data = np.asarray(img.get_fdata(dtype=np.float32))
            if self.bg is None:  # no background: the map's own grid, re-oriented to RAS+
                self.__init__(img)
                self.bg = None
                return np.nan_to_num(nib.orientations.apply_orientation(data, self.ornt).astype(np.float32))
            if self.affine is not None:
                out, _ = resample(np.nan_to_num(data), np.asarray(img.affine, dtype=np.float64), self.affine,
                                  self.bg.shape, order=1)
                return out
            attr = data
        if self.source_shape is None:
            m = as_spatial_array(attr, None, what=what)
        else:
            m = self.orient(upsample_to(attr, self.source_shape, what=what))
        return np.nan_to_num(np.asarray(m, dtype=np.float32))

    def outline(self, outline, shape: Tuple[int, ...]) -> Optional[np.ndarray]:
        if outline is None:
            return None
        if self.source_shape is None or len(self.source_shape) != len(shape):
            return _outline_on(outline, shape)
        return self.orient(_outline_on(outline, self.source_shape))


def _parse_display_mode(display_mode: str) -> List[str]:
    if display_mode == "ortho":
        return list(_ORTHO)
    if (
        isinstance(display_mode, str)
        and display_mode
        and set(display_mode) <= set(_VIEWS)
        and len(set(display_mode)) == len(display_mode)
    ):
        return list(display_mode)
    raise ValueError(
        f"display_mode must be 'ortho' or a combination of 'x', 'y', 'z' (e.g. 'z', 'xz'); got {display_mode!r}"
    )


def _argmax_index(m: np.ndarray) -> Tuple[int, ...]:
    if m.size == 0 or float(m.max()) == float(m.min()):
        return tuple(s // 2 for s in m.shape)
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(m)), m.shape))


def _panels(letters: List[str], cut_coords, ref: np.ndarray,
            affine: Optional[np.ndarray] = None) -> List[Tuple[int, int, str]]:
    """(axis, index, label) for each panel of a 3-D display.

    ``cut_coords`` are world coordinates in mm when ``affine`` is known, else voxel indices.
    """
    shape = ref.shape
    unit = "world coordinates in mm" if affine is not None else "voxel indices"
    if cut_coords is None:
        peak = _argmax_index(ref)
        cuts = [(_VIEWS[l][0], peak[_VIEWS[l][0]]) for l in letters]
    elif len(letters) == 1:
        axis = _VIEWS[letters[0]][0]
        values = [cut_coords] if np.ndim(cut_coords) == 0 else list(cut_coords)
        cuts = [(axis, _cut_index(axis, v, shape, affine)) for v in values]
    else:
        values = list(np.ravel(cut_coords))
        if len(values) != 3:
            raise ValueError(
                f"cut_coords must be 3 {unit} (x, y, z) for display_mode {''.join(letters)!r}; got {cut_coords!r}"
            )
        point = None if affine is None else _world_to_voxel(affine, values)
        cuts = [(_VIEWS[l][0], _cut_index(_VIEWS[l][0], values[_VIEWS[l][0]], shape, affine, point)) for l in letters]
    names = {v[0]: (k, v[1]) for k, v in _VIEWS.items()}
    panels = []
    for axis, index in cuts:
        letter, view = names[axis]
        where = f"{index}" if affine is None else f"{_voxel_to_world(affine, axis, index, shape):g} mm"
        panels.append((axis, index, f"{view} {letter}={where}"))
    return panels


def _layout(display_mode: str, cut_coords, ref: np.ndarray, affine: Optional[np.ndarray]):
    """``(panels, origin)`` of a display: one panel drawn as an image for a 2-D map, else the cuts."""
    if ref.ndim == 2:
        return [(None, None, None)], "upper"
    return _panels(_parse_display_mode(display_mode), cut_coords, ref, affine), "lower"


def _outline_on(outline, shape: Tuple[int, ...]) -> Optional[np.ndarray]:
    """The outline as a boolean array of the display's ``shape`` (upsampled if coarser), or None."""
    if outline is None:
        return None
    arr = np.asarray(as_spatial_array(outline, len(shape), what="outline"), dtype=np.float32)
    return upsample_to(arr, shape, what="outline") >= 0.5


def _world_to_voxel(affine: np.ndarray, xyz) -> np.ndarray:
    return (np.linalg.inv(affine) @ np.r_[np.asarray(xyz, dtype=np.float64), 1.0])[:3]


def _voxel_to_world(affine: np.ndarray, axis: int, index: int, shape) -> float:
    """World coordinate along ``axis`` of the cut ``index`` (through the volume's centre)."""
    ijk = (np.asarray(shape, dtype=np.float64) - 1) / 2.0
    ijk[axis] = index
    return float(np.round((affine @ np.r_[ijk, 1.0])[axis], 6))


def _cut_index(axis: int, value, shape, affine: Optional[np.ndarray], voxel: Optional[np.ndarray] = None) -> int:
    """The voxel index of a cut: ``value`` itself without an affine, else the voxel nearest to ``value`` mm.

    With an affine and no ``voxel`` (a single-letter display), the point is ``value`` along the
    display axis and the volume's centre along the others.
    """
    letter = "xyz"[axis]
    if affine is None:
        if isinstance(value, float) and not float(value).is_integer():
            raise ValueError(f"cut_coords are voxel indices (integers) when bg_img has no affine; got {value!r}")
        index = int(value)
    else:
        if voxel is None:
            centre = affine @ np.r_[(np.asarray(shape, dtype=np.float64) - 1) / 2.0, 1.0]
            centre[axis] = float(value)
            voxel = _world_to_voxel(affine, centre[:3])
        index = int(np.floor(voxel[axis] + 0.5))
    if not 0 <= index < shape[axis]:
        unit = " mm (through bg_img's affine)" if affine is not None else " (a voxel index)"
        raise ValueError(
            f"cut_coords {value!r}{unit} along axis {letter} is outside the volume of shape {shape}"
        )
    return index


def _cut(vol: Optional[np.ndarray], axis: Optional[int], index: Optional[int]) -> Optional[np.ndarray]:
    """2-D array as drawn: for 3-D volumes the cut, transposed for ``origin='lower'``."""
    if vol is None:
        return None
    if axis is None:
        return vol
    return np.take(vol, index, axis=axis).T


#: Over a background and with no threshold, values below this fraction of the colour scale are transparent.
_AUTO_TRANSPARENT = 0.02


def _default_limits(values: Sequence[np.ndarray]) -> Tuple[float, float]:
    lo = min(float(v.min()) for v in values)
    hi = max(float(np.abs(v).max()) for v in values)
    if hi == 0.0:
        return 0.0, 1.0
    return (0.0, hi) if lo >= 0 else (-hi, hi)


def _bg_limits(bg: Optional[np.ndarray]) -> Tuple[float, float]:
    """Grey-scale limits of the scan: 2nd-99.5th percentile of the head, dimmed.

    The head is every voxel above the image's minimum (the background of a raw
    scan is 0, of a normalised one its most negative value). The top of the
    scale is raised by half the range so the brightest tissue is mid-grey and
    coloured overlays stand out (nilearn dims its backgrounds the same way).
    """
    if bg is None:
        return 0.0, 1.0
    fg = bg[bg > bg.min()]
    if fg.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(fg, [2.0, 99.5]))
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi + 0.5 * (hi - lo)


@dataclass(frozen=True)
class _PanelStyle:
    """How every panel of one figure is drawn: colour map and scale, transparency threshold, opacity over the
    scan, the scan's grey range, the image origin and the voxel sizes (for the pixel aspect)."""

    cmap: Any
    norm: Normalize
    threshold: Optional[float]
    alpha: float
    bg_limits: Tuple[float, float]
    origin: str
    zooms: Optional[Tuple[float, ...]]


def _draw_panel(ax: Axes, style: _PanelStyle, bg: Optional[np.ndarray], m: np.ndarray, outline: Optional[np.ndarray],
                axis: Optional[int], index: Optional[int]) -> None:
    """Draw the cut ``index`` along ``axis`` of the map ``m`` (over ``bg``, with ``outline``) into ``ax``."""
    bg2d, map2d, outline2d = _cut(bg, axis, index), _cut(m, axis, index), _cut(outline, axis, index)
    cmap, norm, threshold = style.cmap, style.norm, style.threshold
    kw = dict(origin=style.origin, aspect=_aspect(style.zooms, axis), interpolation="nearest")
    if bg2d is not None:
        ax.imshow(bg2d, cmap="gray", vmin=style.bg_limits[0], vmax=style.bg_limits[1], **kw)
        # Without a threshold, values under 2 % of the colour scale are transparent: drawn as
        # near-black at ``alpha`` they would darken the scan everywhere except at exact zeros.
        cut = threshold if threshold is not None else _AUTO_TRANSPARENT * max(abs(norm.vmin), abs(norm.vmax))
        hide = np.abs(map2d) < cut if cut > 0 else map2d == 0
        ax.imshow(np.ma.masked_where(hide, map2d), cmap=cmap, norm=norm, alpha=style.alpha, **kw)
    else:
        shown = np.ma.masked_where(np.abs(map2d) < threshold, map2d) if threshold is not None else map2d
        ax.imshow(shown, cmap=cmap, norm=norm, **kw)
    if outline2d is not None and outline2d.any() and not outline2d.all():
        ax.contour(outline2d.astype(np.float32), levels=[0.5], colors=_OUTLINE_COLOR, linewidths=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _aspect(zooms: Optional[Tuple[float, ...]], axis: Optional[int]) -> float:
    """Height/width of a displayed pixel from the voxel sizes."""
    if zooms is None:
        return 1.0
    if axis is None:
        return zooms[0] / zooms[1]
    h_axis, v_axis = [a for a in range(3) if a != axis]
    return zooms[v_axis] / zooms[h_axis]


def _axes_grid(n_rows: int, n_cols: int, figure, axes, extra_width: float = 0.0):
    """A ``n_rows x n_cols`` array of axes: the caller's, or in a new/given figure.

    Returns (figure, axes array, whether we made the figure ourselves).
    """
    n = n_rows * n_cols
    if axes is not None:
        if isinstance(axes, Axes):
            fig = axes.figure
            if n == 1:
                return fig, np.array([[axes]], dtype=object), False
            box = axes.get_position()
            axes.set_axis_off()
            w, h = box.width / n_cols, box.height / n_rows
            grid = np.empty((n_rows, n_cols), dtype=object)
            for r in range(n_rows):
                for c in range(n_cols):
                    grid[r, c] = fig.add_axes([box.x0 + c * w, box.y0 + (n_rows - 1 - r) * h, w, h])
            return fig, grid, False
        flat = list(np.ravel(np.asarray(axes, dtype=object)))
        if len(flat) != n or not all(isinstance(a, Axes) for a in flat):
            raise ValueError(f"axes must be one Axes or {n} Axes ({n_rows} x {n_cols}); got {axes!r}")
        return flat[0].figure, np.asarray(flat, dtype=object).reshape(n_rows, n_cols), False
    if figure is not None:
        fig = figure if isinstance(figure, Figure) else plt.figure(figure)
        return fig, np.asarray(fig.subplots(n_rows, n_cols, squeeze=False), dtype=object), False
    fig = plt.figure(
        figsize=(_PANEL_INCHES * n_cols + extra_width, _PANEL_INCHES * n_rows + 0.5), layout="constrained"
    )
    return fig, np.asarray(fig.subplots(n_rows, n_cols, squeeze=False), dtype=object), True


def plot_attribution(
    attr,
    bg_img=None,
    *,
    display_mode: str = "ortho",
    cut_coords=None,
    threshold: Optional[float] = None,
    cmap="hot",
    vmin: Optional[float] = None, vmax: Optional[float] = None,  # the colour scale's ends
    colorbar: bool = True,
    title: Optional[str] = None,
    outline=None,
    alpha: float = 0.7,
    figure=None,
    axes=None,
    output_file: Optional[Union[str, os.PathLike]] = None,
) -> Figure:
    """Orthogonal cuts of an attribution map, over a scan if given.

    Args:
        attr (numpy.ndarray or torch.Tensor): map of shape ``(X, Y, Z)``,
            ``(1, X, Y, Z)``, ``(1, 1, X, Y, Z)`` or ``(H, W)``; if coarser than
            ``bg_img`` it is upsampled (trilinear, ``align_corners=False``).
        bg_img (numpy.ndarray, torch.Tensor or nibabel image, optional): the
            scan drawn in grey underneath (same axis order as ``attr``; a
            nibabel image's voxel sizes set the pixel aspect). Default: ``None``
        display_mode (str, optional): ``"ortho"`` (axial, coronal, sagittal),
            or ``"x"`` (sagittal), ``"y"`` (coronal), ``"z"`` (axial), or a
            combination such as ``"xz"``. Ignored for 2-D maps. Default: ``"ortho"``
        cut_coords (float or sequence of float, optional): where to cut. As in
            nilearn, world coordinates in **millimetres** when ``bg_img`` is a
            nibabel image (its affine maps them to the nearest voxel); voxel
            indices (integers) when no affine is known (an array or tensor
            ``bg_img``, or none). For a single-letter mode, one value or a list
            of values along that axis (one panel each); otherwise ``(x, y, z)``.
            Default: through the map's maximum.
        threshold (float, optional): voxels with ``|value| < threshold`` are
            transparent. Default: ``None`` (over a background, values under 2 %
            of the colour scale's maximum are transparent)
        cmap (str or Colormap, optional): colour map. Default: ``"hot"``
        vmin (float, optional): bottom of the colour scale. Default: 0 for a
            non-negative map, else ``-max|attr|``.
        vmax (float, optional): top of the colour scale. Default: ``max|attr|``
        colorbar (bool, optional): draw a colour bar. Default: ``True``
        title (str, optional): figure title. Default: ``None``
        outline (array-like of bool, optional): a structure drawn as a contour,
            on the display grid (or coarser; upsampled and thresholded at 0.5).
            Default: ``None``
        alpha (float, optional): opacity of the map over ``bg_img``. Default: ``0.7``
        figure (matplotlib Figure or int, optional): figure to draw in.
            Default: a new figure.
        axes (matplotlib Axes or list of Axes, optional): one Axes (split into
            the panels) or one Axes per panel. Default: ``None``
        output_file (str or Path, optional): save the figure here (format from
            the extension). Default: ``None``

    Returns:
        matplotlib.figure.Figure: the figure.

    Examples::

        >>> import numpy as np
        >>> scan = np.random.rand(30, 36, 28)
        >>> mask = np.random.rand(8, 9, 7)          # layer-resolution SMOCAM mask
        >>> fig = plot_attribution(mask, scan, threshold=0.2, title="SMOCAM")
        >>> len(fig.axes)                           # 3 cuts + colour bar
        4
    """
    display = _Display(bg_img)
    m = display.map(attr)
    bg, zooms, affine = display.bg, display.zooms, display.affine
    if m.ndim not in (2, 3):
        raise ValueError(f"attr must be 2-D or 3-D after removing batch dims; got shape {m.shape}")
    out = display.outline(outline, m.shape)
    panels, origin = _layout(display_mode, cut_coords, m, affine)
    lo, hi = _default_limits([m])
    norm = Normalize(vmin=lo if vmin is None else vmin, vmax=hi if vmax is None else vmax)
    fig, grid, own = _axes_grid(1, len(panels), figure, axes, extra_width=0.8 if colorbar else 0.0)
    style = _PanelStyle(cmap, norm, threshold, alpha, _bg_limits(bg), origin, zooms)
    for ax, (axis, index, label) in zip(grid[0], panels):
        _draw_panel(ax, style, bg, m, out, axis, index)
        if label:
            ax.set_title(label, fontsize=9)
    if colorbar:
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(grid[0]), shrink=0.8)
    if title:
        if own or axes is None:
            fig.suptitle(title)
        else:
            first = grid[0, 0]
            first.set_title(f"{title}\n{first.get_title()}".strip(), fontsize=9)
    return _finish(fig, output_file, own)


def plot_comparison(
    maps: Mapping[str, object],
    bg_img=None,
    *,
    share_scale: bool = False,
    outline=None,
    cut_coords=None,
    display_mode: str = "ortho",
    threshold: Optional[float] = None,
    cmap="hot",
    vmin: Optional[float] = None, vmax: Optional[float] = None,  # the colour scale's ends
    colorbar: bool = True,
    title: Optional[str] = None,
    alpha: float = 0.7,
    figure=None,
    output_file: Optional[Union[str, os.PathLike]] = None,
) -> Figure:
    """Several attribution maps side by side: a row per method, a column per view.

    Every row is cut at the same voxel indices, so rows are directly
    comparable (like the SMOCAM poster's figure comparing Grad-CAM,
    occlusion, saliency, DeepLIFT and SMOCAM for the right lateral ventricle).

    Colour scale: attribution methods have different units (a gradient, a
    change of prediction, a mask value), so by default each map is divided by
    its own maximum absolute value and all rows share the scale 0..1 (-1..1
    if any map is signed), read as "fraction of that map's maximum"; each
    row's label gives the maximum it was divided by. With
    ``share_scale=True`` the maps are drawn in their own units with one
    ``vmin``/``vmax`` for all rows (meaningful only when they share units).

    Args:
        maps (dict[str, array]): method name -> map (any shape accepted by
            :func:`plot_attribution`). Maps coarser than the display grid are
            upsampled to it; the display grid is ``bg_img``'s shape, else the
            largest map's.
        bg_img (array, tensor or nibabel image, optional): scan drawn
            underneath. Default: ``None``
        share_scale (bool, optional): one colour scale in the maps' own units
            instead of per-map normalisation. Default: ``False``
        outline (array-like of bool, optional): structure contour drawn in every
            panel. Default: ``None``
        cut_coords (float or sequence of float, optional): as in
            :func:`plot_attribution`: millimetres when ``bg_img`` is a nibabel
            image, else voxel indices. Default: through the maximum of the first map.
        display_mode (str, optional): as in :func:`plot_attribution`. Default: ``"ortho"``
        threshold (float, optional): transparency threshold in displayed units
            (a fraction of each map's maximum by default). Default: ``None``
        cmap (str or Colormap, optional): colour map. Default: ``"hot"``
        vmin (float, optional): bottom of the colour scale, displayed units.
            Default: from the maps.
        vmax (float, optional): top of the colour scale. Default: from the maps.
        colorbar (bool, optional): draw the (single) colour bar. Default: ``True``
        title (str, optional): figure title. Default: ``None``
        alpha (float, optional): opacity over ``bg_img``. Default: ``0.7``
        figure (matplotlib Figure or int, optional): figure to draw in.
            Default: a new figure.
        output_file (str or Path, optional): save the figure here. Default: ``None``

    Returns:
        matplotlib.figure.Figure: the figure.

    Examples::

        >>> import numpy as np
        >>> scan = np.random.rand(30, 36, 28)
        >>> maps = {"Grad-CAM": np.random.rand(8, 9, 7), "Saliency": np.random.rand(30, 36, 28)}
        >>> fig = plot_comparison(maps, scan)
        >>> len(fig.axes)                           # 2 rows x 3 views + colour bar
        7
    """
    if not isinstance(maps, Mapping) or not maps:
        raise ValueError(f"maps must be a non-empty dict {{method name: map}}; got {type(maps).__name__}")
    display = _Display(bg_img)
    bg, zooms, affine = display.bg, display.zooms, display.affine
    raw = {str(k): v if _is_image(v) else as_spatial_array(v, None if bg is None else bg.ndim, what=f"maps[{k!r}]")
           for k, v in maps.items()}
    if bg is not None:
        shape = bg.shape
    else:
        shape = max((tuple(v.shape) for v in raw.values()), key=lambda s: (len(s), int(np.prod(s))))
        display.source_shape = shape
    shown: Dict[str, np.ndarray] = {}
    scale: Dict[str, float] = {}
    for name, v in raw.items():
        if not _is_image(v) and v.ndim != len(shape):
            raise ValueError(f"maps[{name!r}] has shape {v.shape}; expected {len(shape)} spatial dims like {shape}")
        m = display.map(v, what=f"maps[{name!r}]")
        peak = float(np.abs(m).max())
        scale[name] = peak
        shown[name] = m if share_scale or peak == 0.0 else m / peak
    first = next(iter(shown.values()))
    out = display.outline(outline, first.shape)
    affine = display.affine if affine is None else affine
    panels, origin = _layout(display_mode, cut_coords, first, affine)
    lo, hi = _default_limits(list(shown.values()))
    if not share_scale:
        lo, hi = (0.0, 1.0) if lo >= 0 else (-1.0, 1.0)
    norm = Normalize(vmin=lo if vmin is None else vmin, vmax=hi if vmax is None else vmax)
    fig, grid, own = _axes_grid(len(shown), len(panels), figure, None, extra_width=1.4)
    style = _PanelStyle(cmap, norm, threshold, alpha, _bg_limits(bg), origin, zooms)
    for r, (name, m) in enumerate(shown.items()):
        for c, (axis, index, label) in enumerate(panels):
            ax = grid[r, c]
            _draw_panel(ax, style, bg, m, out, axis, index)
            if r == 0 and label:
                ax.set_title(label, fontsize=9)
        row_label = name if share_scale else f"{name}\n(max {scale[name]:.3g})"
        grid[r, 0].set_ylabel(row_label, fontsize=9)
    if colorbar:
        cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(grid.ravel()), shrink=0.6)
        cbar.set_label("attribution" if share_scale else "fraction of each map's maximum")
    if title:
        fig.suptitle(title)
    return _finish(fig, output_file, own)
