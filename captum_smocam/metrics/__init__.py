"""Scores of attribution maps on the input grid, for 1-D, 2-D and 3-D data.

The functions here compare an attribution map (SMOCAM, Grad-CAM, Occlusion,
Saliency, DeepLIFT, ...) with a structure whose location is known, measure how
faithful the map is to the model, and run the model-randomisation sanity check.
They are plain functions so that a benchmark can call each one per subject,
per method and per output, and put the numbers in a table.

Families of scores, one module each (all importable from here):

* **Localisation** (:mod:`.localisation`) -- :func:`mass_inside`,
  :func:`dilate_mask`, :func:`mass_inside_dilated`, :func:`auroc`,
  :func:`pointing_game`, :func:`false_positive_rate`; among a label map's
  regions -- :func:`region_rank`, :func:`region_hit` (hit rate top-1/top-3);
  and **side specificity** for paired structures (left/right hippocampus) --
  :func:`side_specificity`, :func:`side_specificity_density`,
  :func:`hemisphere_share`.
* **Compactness** (:mod:`.compactness`) -- :func:`peak_distance_mm` (how far
  the maximum lies from the structure), :func:`n_components` (blobs above
  half the maximum).
* **Faithfulness** for a regression output (:mod:`.faithfulness`) --
  :func:`deletion_insertion` (Petsiuk et al. 2018), with the change of
  prediction measured as ``|f(x') - f(x)| / sigma``.
* **Sanity** (:mod:`.sanity`) -- :func:`spearman`,
  :func:`cascading_randomization` (Adebayo et al. 2018).

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

    N. T. Siegel et al., "Explainable AI methods for neuroimaging: systematic
    failures of common tools, ...", arXiv:2508.02560, 2025.
"""
from __future__ import annotations

from ._inputs import ArrayLike  # noqa: F401  (the type of every map argument)
from .compactness import DEFAULT_COMPONENT_FRACTION, n_components, peak_distance_mm
from .faithfulness import DEFAULT_FRACTIONS, deletion_insertion
from .localisation import (
    POINTING_TIES,
    auroc,
    dilate_mask,
    false_positive_rate,
    hemisphere_share,
    mass_inside,
    mass_inside_dilated,
    pointing_game,
    region_hit,
    region_rank,
    side_specificity,
    side_specificity_density,
)
from .sanity import cascading_randomization, spearman

__all__ = [
    "mass_inside",
    "dilate_mask",
    "mass_inside_dilated",
    "auroc",
    "pointing_game",
    "false_positive_rate",
    "region_rank",
    "region_hit",
    "peak_distance_mm",
    "n_components",
    "side_specificity",
    "side_specificity_density",
    "hemisphere_share",
    "deletion_insertion",
    "spearman",
    "cascading_randomization",
    "DEFAULT_FRACTIONS",
    "POINTING_TIES",
    "DEFAULT_COMPONENT_FRACTION",
]
