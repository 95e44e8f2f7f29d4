"""Localisation scores: how much of a map lies on a structure whose place is known, in three families.

* on one structure (:mod:`.structure`) -- :func:`mass_inside`, :func:`dilate_mask`,
  :func:`mass_inside_dilated`, :func:`auroc`, :func:`pointing_game`,
  :func:`false_positive_rate`;
* among the regions of a label map (:mod:`.regions`) -- :func:`region_rank`, :func:`region_hit`
  (hit rate top-1 / top-3);
* on a left/right pair (:mod:`.sides`) -- :func:`side_specificity`,
  :func:`side_specificity_density`, :func:`hemisphere_share`.

Definitions, directions and references: ``docs/metrics.md``.

References:
    J. Zhang, S. A. Bargal, Z. Lin, J. Brandt, X. Shen, S. Sclaroff,
    "Top-down neural attention by excitation backprop", ECCV 2016.

    N. T. Siegel, J. H. Cole, M. Habes, S. Haufe, K. Ritter, M.-A. Schulz,
    "Explainable AI methods for neuroimaging: systematic failures of common
    tools, the need for domain-specific validation, and a proposal for safe
    application", arXiv:2508.02560, 2025.
"""
from __future__ import annotations

from . import regions, sides, structure
from .regions import region_hit, region_rank
from .sides import hemisphere_share, side_specificity, side_specificity_density
from .structure import (
    POINTING_TIES, auroc, dilate_mask, false_positive_rate, mass_inside, mass_inside_dilated, pointing_game,
)

# Every public name of the three families (imported above, so that they are importable from here).
__all__ = [*structure.__all__, *regions.__all__, *sides.__all__]
