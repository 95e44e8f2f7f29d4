"""The atypicality of a subject's attention: region shares against the cohort's median and spread.

:func:`region_share_matrix` turns a run's long region tables into a subjects x
regions matrix of shares; :func:`robust_z` standardises each region by the
cohort's median and MAD; :func:`atypicality_scores` is the root mean square of a
subject's z-scores (defined in ``docs/report.md``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

__all__ = ["robust_z", "atypicality_scores", "region_share_matrix", "MIN_SCALE", "MAD_TO_SD"]

#: ``1.4826 * MAD`` estimates the standard deviation of normally distributed values.
MAD_TO_SD = 1.4826
#: Floor of a region's robust scale, in share units (0.001 = a tenth of a percentage point of the attention).
MIN_SCALE = 0.001


def _check_shares(region_shares) -> pd.DataFrame:
    if not isinstance(region_shares, pd.DataFrame):
        raise TypeError(f"region_shares must be a pandas.DataFrame (subjects x regions), got "
                        f"{type(region_shares).__name__}")
    try:
        values = region_shares.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"region_shares must hold numbers; its dtypes are {sorted(set(map(str, region_shares.dtypes)))}"
                        ) from None
    if np.isinf(values).any():
        raise ValueError("region_shares holds infinite values; expected shares in [0, 1] (NaN = region absent)")
    if region_shares.shape[0] < 3:
        raise ValueError(f"atypicality needs at least 3 subjects to estimate the cohort's median and spread; "
                         f"got {region_shares.shape[0]}")
    if region_shares.shape[1] < 1:
        raise ValueError("region_shares has no region column")
    return pd.DataFrame(values, index=region_shares.index, columns=region_shares.columns)


def robust_z(region_shares: pd.DataFrame, *, min_scale: float = MIN_SCALE) -> pd.DataFrame:
    """Each subject's region shares standardised by the cohort's median and MAD, region by region.

    For subject ``i`` and region ``j`` with share ``s_ij``::

        m_j     = median_i s_ij
        sigma_j = max(1.4826 * median_i |s_ij - m_j|, min_scale)
        z_ij    = (s_ij - m_j) / sigma_j

    NaN shares (a region absent from a subject's label map) are left out of
    the medians and stay NaN.

    Args:
        region_shares (pandas.DataFrame): ``N x R``, one row per subject, one
            column per region, the ``share`` of :func:`captum_smocam.regions.get_region_table`
            (:func:`region_share_matrix` builds it from a run's tables). ``N >= 3``.
        min_scale (float, optional): floor of ``sigma_j`` in share units, so that a
            region on which the whole cohort agrees exactly cannot turn a tiny
            difference into a huge ``z``. Default: :data:`MIN_SCALE` (0.001)

    Returns:
        pandas.DataFrame: ``N x R`` robust z-scores, same index and columns.

    Examples::

        >>> shares = pd.DataFrame({"a": [0.50, 0.52, 0.48, 0.90], "b": [0.5, 0.48, 0.52, 0.1]},
        ...                       index=["s1", "s2", "s3", "s4"])
        >>> robust_z(shares).round(2)["a"].tolist()
        [-0.34, 0.34, -1.01, 13.15]
    """
    shares = _check_shares(region_shares)
    if not (isinstance(min_scale, (int, float)) and min_scale > 0):
        raise ValueError(f"min_scale must be a positive number, got {min_scale!r}")
    median = shares.median(axis=0, skipna=True)
    mad = (shares - median).abs().median(axis=0, skipna=True)
    scale = np.maximum(MAD_TO_SD * mad.fillna(0.0), float(min_scale))
    return (shares - median) / scale


def atypicality_scores(region_shares: pd.DataFrame, *, min_scale: float = MIN_SCALE) -> pd.Series:
    """How far each subject's attention profile lies from the cohort's: the RMS of its robust z-scores.

    ``atypicality_i = sqrt(mean_j z_ij ** 2)`` over the regions ``j`` the
    subject has, with ``z`` from :func:`robust_z` (median / MAD per region).
    It is the Euclidean distance of the subject's region-share vector from
    the cohort's median vector, each region scaled by the cohort's robust
    spread, divided by the square root of the number of regions: a subject
    whose shares are typical everywhere scores about 1 (the RMS of standard
    normal values), a score of 5 means the shares lie five robust standard
    deviations from the cohort's median on (quadratic) average. Median and MAD
    are used because the subjects one looks for would pull a mean, a standard
    deviation or a covariance towards themselves (the median and the MAD
    resist up to half the cohort being atypical); a full Mahalanobis distance
    is not used because shares sum to at most 1 (their covariance is
    singular) and cohorts often have fewer subjects than regions. See
    ``docs/report.md``.

    Args:
        region_shares (pandas.DataFrame): ``N x R`` shares, one row per subject
            (:func:`region_share_matrix`); ``N >= 3``.
        min_scale (float, optional): floor of each region's robust scale, in
            share units (see :func:`robust_z`). Default: :data:`MIN_SCALE`

    Returns:
        pandas.Series: ``N`` scores (>= 0; NaN for a subject without any share),
        named ``"atypicality"``, indexed like ``region_shares``.

    Examples::

        >>> shares = pd.DataFrame({"left": [0.30, 0.31, 0.29, 0.30, 0.05],
        ...                        "right": [0.30, 0.29, 0.31, 0.30, 0.55]},
        ...                       index=["s1", "s2", "s3", "s4", "odd"])
        >>> atypicality_scores(shares).idxmax()
        'odd'
    """
    z = robust_z(region_shares, min_scale=min_scale)
    score = np.sqrt((z ** 2).mean(axis=1, skipna=True))
    return score.rename("atypicality")


def region_share_matrix(regions: pd.DataFrame, target: Optional[str] = None) -> pd.DataFrame:
    """Long region tables (``subject``, ``name``, ``share``, optional ``target``) as a subjects x regions matrix.

    Args:
        regions (pandas.DataFrame): per-subject rows of
            :func:`captum_smocam.regions.get_region_table` with a ``subject``
            column, e.g. the concatenated ``<subject>_regions.csv`` of a run.
        target (str, optional): keep the rows of this ``target`` only. Default: all rows

    Returns:
        pandas.DataFrame: one row per subject (in order of appearance), one
        column per region name; NaN where a subject's table lacks a region.

    Examples::

        >>> long = pd.DataFrame({"subject": ["a", "a", "b"], "name": ["x", "y", "x"], "share": [0.6, 0.4, 1.0]})
        >>> region_share_matrix(long).to_dict("index")
        {'a': {'x': 0.6, 'y': 0.4}, 'b': {'x': 1.0, 'y': nan}}
    """
    missing = [c for c in ("subject", "name", "share") if c not in regions.columns]
    if missing:
        raise ValueError(f"region tables lack column(s) {missing}; they have {list(regions.columns)}")
    if target is not None:
        if "target" not in regions.columns:
            raise ValueError("region tables have no 'target' column to select from")
        regions = regions[regions["target"] == target]
    wide = regions.pivot_table(index="subject", columns="name", values="share", aggfunc="first", sort=False)
    order = list(dict.fromkeys(regions["subject"]))
    return wide.reindex(order)
