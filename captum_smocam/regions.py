"""Per-region attention: intersect an attribution map with a label volume.

SMOCAM's poster concludes that the method gives "a quantitative analysis of
brain morphometric measurements by ... intersecting the generated attention
map with all brain regions to obtain their respective attention". This module
does that intersection:

* :func:`get_region_table` -- one row per label of a parcellation (FreeSurfer
  ``aseg``/``aparc+aseg``, a synthetic phantom, ...) with the attention it
  receives;
* :func:`aggregate_region_tables` -- mean and standard deviation per region
  over many subjects;
* :func:`read_lut` -- label names from a ``FreeSurferColorLUT.txt``-format
  file.

Geometry: a map and a label map are intersected voxel by voxel only when
they are known to share a grid. When the label map carries its own grid (a
NIfTI image, or the labels :func:`captum_smocam.nifti.load_label_map`
returns) and the map's grid is known (``info`` from
:func:`captum_smocam.nifti.load_scan`, or ``map_affine``), the map is
resampled onto the labels in world (mm) coordinates
(:func:`captum_smocam.nifti.map_to_grid`); when only one grid is known, or two
plain arrays differ in shape, :func:`get_region_table` refuses rather than
guess. :func:`as_spatial_array` and :func:`upsample_to` stay importable from here.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from .spatial import as_spatial_array, resample, to_numpy, upsample_to

__all__ = [
    "as_spatial_array",
    "upsample_to",
    "read_lut",
    "get_region_table",
    "aggregate_region_tables",
    "REGION_TABLE_COLUMNS",
]

#: Columns of the table returned by :func:`get_region_table`, in order.
REGION_TABLE_COLUMNS = ("label", "name", "n_voxels", "attention_sum", "attention_mean", "share")


def read_lut(path: Union[str, os.PathLike]) -> Dict[int, str]:
    """Read label names from a ``FreeSurferColorLUT.txt``-format file.

    Each non-blank line that is not a comment reads ``index name R G B A``
    (any amount of spaces or tabs between fields). Text after ``#`` is a
    comment. Colours are not returned.

    Args:
        path (str or Path): the LUT file.

    Returns:
        dict[int, str]: label index -> name.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a line does not start with an integer followed by a name,
            or an index appears twice with different names.

    Examples::

        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "lut.txt")
        >>> _ = open(p, "w").write("#No. Label Name: R G B A\\n0  Unknown 0 0 0 0\\n17\\tLeft-Hippocampus 220 216 20 0\\n")
        >>> read_lut(p)
        {0: 'Unknown', 17: 'Left-Hippocampus'}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"colour look-up table not found: {path}")
    names: Dict[int, str] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            try:
                index = int(fields[0])
            except ValueError:
                index = None
            if index is None or len(fields) < 2:
                raise ValueError(
                    f"{path}:{lineno}: expected 'index name R G B A', got {raw.rstrip()!r}"
                )
            name = fields[1]
            if index in names and names[index] != name:
                raise ValueError(
                    f"{path}:{lineno}: label {index} named {name!r} but already named {names[index]!r}"
                )
            names[index] = name
    return names


def _label_array(labels) -> np.ndarray:
    arr = to_numpy(labels, "labels")
    if arr.ndim > 3:
        arr = as_spatial_array(arr, 3, what="labels")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError("labels contain NaN or infinite values; expected integer labels")
        rounded = np.rint(arr)
        if not np.allclose(arr, rounded, atol=1e-3):
            bad = arr[~np.isclose(arr, rounded, atol=1e-3)].ravel()[:3]
            raise ValueError(f"labels must be integers; got non-integer values such as {bad.tolist()}")
        arr = rounded
    elif arr.dtype.kind not in "iu":
        raise TypeError(f"labels must be an integer array; got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _affine_of(x):
    affine = getattr(x, "affine", None)
    return None if affine is None else np.asarray(affine, dtype=np.float64)


def _on_label_grid(attribution, labels, info, map_affine, labels_affine) -> np.ndarray:
    """The map on the labels' grid (float64), by world coordinates when both grids are known; else refuse."""
    lab_affine = _affine_of(labels) if labels_affine is None else np.asarray(labels_affine, dtype=np.float64)
    lab_shape = _label_array(labels).shape
    if map_affine is None and info is None:
        map_affine = _affine_of(attribution)  # a nibabel image
    if info is not None and map_affine is not None:
        raise ValueError("give the map's grid once: info (a ScanInfo) or map_affine, not both")
    if info is not None and not (hasattr(info, "grid_affine") and hasattr(info, "grid_shape")):
        raise TypeError(f"info must be the ScanInfo returned by load_scan, got {type(info).__name__}")
    arr = as_spatial_array(attribution, 3 if len(lab_shape) == 3 else None, what="attribution")
    if info is not None:
        grid_affine, grid_shape = np.asarray(info.grid_affine, dtype=np.float64), tuple(info.grid_shape)
    elif map_affine is not None:
        grid_affine, grid_shape = np.asarray(map_affine, dtype=np.float64), tuple(arr.shape)
    else:
        grid_affine = grid_shape = None
    if lab_affine is not None and grid_affine is not None:
        if lab_affine.shape != (4, 4) or grid_affine.shape != (4, 4):
            raise ValueError(f"affines must be 4 x 4; got {grid_affine.shape} (map) and {lab_affine.shape} (labels)")
        on_grid = upsample_to(arr, grid_shape, what="attribution")
        out, _ = resample(np.nan_to_num(on_grid, nan=0.0), grid_affine, lab_affine, lab_shape, order=1)
        labelled = _label_array(labels) != 0
        inside, _ = resample(np.ones(grid_shape, np.float32), grid_affine, lab_affine, lab_shape, order=0)
        if labelled.any() and not inside[labelled].any():
            raise ValueError("none of the labelled voxels lies inside the map's grid: are the map's grid (info / "
                             "map_affine) and the label map's affine in the same space?")
        return out.astype(np.float64)
    if lab_affine is not None:
        raise ValueError(
            f"the labels carry their grid (an affine) but the map's grid is unknown, so the map of shape "
            f"{tuple(arr.shape)} cannot be placed on them: pass info=<the ScanInfo from load_scan> (or "
            f"map_affine=...) and the map is resampled in world coordinates"
        )
    if grid_shape is not None and lab_shape != grid_shape:
        raise ValueError(
            f"the labels have shape {lab_shape} but the map's grid is {grid_shape}, and the labels carry no "
            f"affine: pass a NIfTI label image, the labels from load_label_map, or labels_affine=..."
        )
    if grid_shape is None and tuple(arr.shape) != lab_shape:
        raise ValueError(
            f"the map has shape {tuple(arr.shape)} and the labels {lab_shape}, and neither carries a grid: pass "
            f"info=<ScanInfo from load_scan> with a NIfTI label map (resampled in world coordinates), or bring "
            f"the map onto the labels first (upsample_to(map, labels.shape) when both cover the same field of view)"
        )
    return upsample_to(arr, lab_shape, what="attribution").astype(np.float64)


def get_region_table(
    attribution,
    labels,
    names: Optional[Union[Mapping[int, str], str, os.PathLike]] = None,
    *,
    positive_only: bool = True,
    include_background: bool = False,
    info=None,
    map_affine=None,
    labels_affine=None,
) -> pd.DataFrame:
    """Attention received by each labelled region of a parcellation.

    The attribution is first brought onto the label grid (leading size-1
    dimensions dropped), so sums are over label-grid voxels:

    * the labels carry their grid (a NIfTI image, the labels returned by
      :func:`captum_smocam.nifti.load_label_map`, or ``labels_affine``) and
      the map's grid is known (``info``: the :class:`~captum_smocam.nifti.ScanInfo`
      of :func:`~captum_smocam.nifti.load_scan`, the map being on the model
      grid or at a layer's coarser resolution; or ``map_affine``; or a NIfTI
      map): the map is resampled in world coordinates
      (:func:`captum_smocam.nifti.map_to_grid`, linear, 0 outside the map's
      grid), whatever the two orientations (LAS, RAS, oblique) and shapes;
    * only the map's grid is known: the labels must be on it (the model
      grid's shape); a layer-resolution map is upsampled trilinearly with
      ``align_corners=False`` (as Captum's ``LayerAttribution.interpolate``);
    * neither is known: the map and the labels must have one shape (upsample
      a layer map first, :func:`upsample_to`);
    * only the labels' grid is known: refused (a ValueError saying to pass ``info``).

    Then, for each label value ``k`` present in ``labels``::

        attention_sum[k]  = sum of a over voxels with label k
        attention_mean[k] = attention_sum[k] / n_voxels[k]
        share[k]          = attention_sum[k] / sum of a over ALL voxels

    where ``a = max(attribution, 0)`` when ``positive_only`` (negative values
    count as 0 in sums, means and shares), else the signed attribution.
    The total in ``share`` includes the background (label 0), so the shares of
    the foreground rows add up to the fraction of attention that falls inside
    labelled tissue; the background row itself is omitted unless
    ``include_background``.

    Args:
        attribution (numpy.ndarray or torch.Tensor): map of shape
            ``(X, Y, Z)``, ``(1, X, Y, Z)`` or ``(1, 1, X, Y, Z)`` (or 2-D),
            at the label grid's resolution or coarser.
        labels (numpy.ndarray, torch.Tensor or nibabel image): integer label
            volume of shape ``(X, Y, Z)`` (leading size-1 dims allowed); 0 is
            background. A nibabel image, or a
            :class:`~captum_smocam.spatial.GridArray` (what
            :func:`~captum_smocam.nifti.load_label_map` returns), carries its
            grid.
        names (dict or str or Path, optional): label -> name, or the path of a
            ``FreeSurferColorLUT.txt``-format file read with :func:`read_lut`.
            Labels without a name are called ``"label_<k>"`` (``"background"``
            for 0). Default: ``None``
        positive_only (bool, optional): count negative attribution as 0.
            Default: ``True``
        include_background (bool, optional): keep the row of label 0.
            Default: ``False``
        info (ScanInfo, optional): where the map lies: the model grid
            (``info.grid_affine``, ``info.grid_shape``) of the scan it explains.
            Default: None
        map_affine (array-like, optional): 4 x 4 voxel -> world matrix of the
            map's own grid (instead of ``info``). Default: None
        labels_affine (array-like, optional): 4 x 4 voxel -> world matrix of
            the labels' grid, when ``labels`` does not carry it. Default: None

    Raises:
        ValueError: the grids cannot be matched (see above; the message says
            what to pass), the labels are not integers, or no labelled voxel
            lies inside the map's grid.

    Returns:
        pandas.DataFrame: one row per label, sorted by ``share`` (descending,
        ties by label), with columns

        - ``label`` (int): label value;
        - ``name`` (str): region name;
        - ``n_voxels`` (int): voxels with this label on the label grid;
        - ``attention_sum`` (float): summed attention over the region;
        - ``attention_mean`` (float): ``attention_sum / n_voxels``;
        - ``share`` (float): ``attention_sum`` / total attention over all
          voxels (background included); ``NaN`` if the total is 0.

        ``table.attrs["total_attention"]`` holds that total.

    Examples::

        >>> labels = np.zeros((7, 8, 9), dtype=int); labels[:3] = 17; labels[4:] = 53
        >>> attr = np.zeros((7, 8, 9)); attr[:3] = 1.0; attr[4:] = 0.5
        >>> get_region_table(attr, labels, {17: "Left-Hippocampus", 53: "Right-Hippocampus"})
           label               name  n_voxels  attention_sum  attention_mean     share
        0     17   Left-Hippocampus       216          216.0             1.0  0.666667
        1     53  Right-Hippocampus       216          108.0             0.5  0.333333
    """
    attr = _on_label_grid(attribution, labels, info, map_affine, labels_affine)
    lab = _label_array(labels)
    if positive_only:
        attr = np.maximum(attr, 0.0)
    if isinstance(names, (str, os.PathLike)):
        names = read_lut(names)
    elif names is not None and not isinstance(names, Mapping):
        raise TypeError(f"names must be a dict {{label: name}} or a LUT path; got {type(names).__name__}")
    names = {int(k): str(v) for k, v in (names or {}).items()}

    values, inverse = np.unique(lab.ravel(), return_inverse=True)
    n_vox = np.bincount(inverse, minlength=len(values))
    sums = np.bincount(inverse, weights=attr.ravel(), minlength=len(values))
    total = float(attr.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = sums / total if total != 0 else np.full(len(values), np.nan)

    def name_of(k: int) -> str:
        if k in names:
            return names[k]
        return "background" if k == 0 else f"label_{k}"

    table = pd.DataFrame(
        {
            "label": values.astype(np.int64),
            "name": [name_of(int(k)) for k in values],
            "n_voxels": n_vox.astype(np.int64),
            "attention_sum": sums,
            "attention_mean": sums / n_vox,
            "share": shares,
        }
    )
    if not include_background:
        table = table[table["label"] != 0]
    table = table.sort_values(["share", "label"], ascending=[False, True], kind="mergesort", na_position="last")
    table = table.reset_index(drop=True)
    table.attrs["total_attention"] = total
    table.attrs["positive_only"] = positive_only
    return table


def aggregate_region_tables(
    tables: Union[Iterable[pd.DataFrame], Mapping[str, pd.DataFrame]],
    *,
    by: str = "name",
    columns: Sequence[str] = ("share", "attention_mean"),
) -> pd.DataFrame:
    """Mean and standard deviation of region statistics over many subjects.

    A region contributes to a subject's statistics only if it appears in that
    subject's table (a structure with no voxels has no mean attention); ``n``
    counts those subjects.

    Args:
        tables (iterable or dict of pandas.DataFrame): tables from
            :func:`get_region_table`, one per subject (dict keys are ignored).
        by (str, optional): column identifying a region across subjects,
            usually ``"name"`` or ``"label"``. Default: ``"name"``
        columns (sequence of str, optional): statistics to aggregate.
            Default: ``("share", "attention_mean")``

    Returns:
        pandas.DataFrame: one row per region with columns ``by``, ``n`` and,
        for each ``c`` in ``columns``, ``c + "_mean"`` and ``c + "_sd"``
        (sample standard deviation, ``ddof=1``; ``NaN`` when ``n == 1``);
        sorted by the first ``*_mean`` column, descending.

    Examples::

        >>> t1 = pd.DataFrame({"name": ["a", "b"], "share": [0.6, 0.2], "attention_mean": [1.0, 0.5]})
        >>> t2 = pd.DataFrame({"name": ["a", "b"], "share": [0.4, 0.4], "attention_mean": [3.0, 0.5]})
        >>> aggregate_region_tables([t1, t2])[["name", "n", "share_mean", "attention_mean_mean"]]
          name  n  share_mean  attention_mean_mean
        0    a  2         0.5                  2.0
        1    b  2         0.3                  0.5
    """
    if isinstance(tables, Mapping):
        tables = list(tables.values())
    tables = list(tables)
    if not tables:
        raise ValueError("tables is empty; expected at least one region table")
    if isinstance(columns, str):
        columns = (columns,)
    columns = list(columns)
    if not columns:
        raise ValueError("columns is empty; expected at least one column name such as 'share'")
    for i, t in enumerate(tables):
        if not isinstance(t, pd.DataFrame):
            raise TypeError(f"tables[{i}] is a {type(t).__name__}; expected a pandas.DataFrame")
        missing = [c for c in [by, *columns] if c not in t.columns]
        if missing:
            raise ValueError(
                f"tables[{i}] lacks column(s) {missing}; it has {list(t.columns)}"
            )
    stacked = pd.concat([t[[by, *columns]] for t in tables], ignore_index=True)
    grouped = stacked.groupby(by, sort=False)
    out = pd.DataFrame({"n": grouped.size()})
    for c in columns:
        out[f"{c}_mean"] = grouped[c].mean()
        out[f"{c}_sd"] = grouped[c].std(ddof=1)
    out = out.reset_index()
    out = out.sort_values(f"{columns[0]}_mean", ascending=False, kind="mergesort").reset_index(drop=True)
    return out
