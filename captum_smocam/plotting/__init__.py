"""Plots of attribution maps and of what they say.

Argument names follow nilearn's ``plot_stat_map`` (``bg_img``,
``display_mode``, ``cut_coords``, ``threshold``, ``cmap``, ``vmin``/``vmax``,
``colorbar``, ``title``, ``figure``, ``axes``, ``output_file``). Every
function returns the matplotlib figure and never calls ``plt.show()``. With
``output_file`` the figure is saved atomically
(:func:`captum_smocam._io.save_figure`) and, if the function made it (no
``figure``, ``axes`` or ``ax`` given), closed: pyplot forgets it, and the
returned figure can still be inspected or saved again.

* :func:`plot_attribution` -- axial/coronal/sagittal cuts of a map over a scan;
* :func:`plot_comparison` -- one row per attribution method, same cuts
  (the SMOCAM poster's comparison of Grad-CAM, occlusion, saliency, DeepLIFT
  and SMOCAM);
* :func:`plot_region_attention` -- a region table as a bar chart;
* :func:`plot_convergence` -- SMOCAM's loss terms per optimisation step;
* :func:`plot_asymmetry` -- one subject's value and prediction within a
  reference distribution (the poster's hippocampal-asymmetry figure).

Maps may be NumPy arrays or torch tensors of shape ``(X, Y, Z)``,
``(1, X, Y, Z)`` or ``(1, 1, X, Y, Z)``, or 2-D ``(H, W)`` maps (one panel).
A map coarser than ``bg_img`` (a layer-resolution mask) is upsampled to the
background's shape with ``torch.nn.functional.interpolate(...,
mode="trilinear", align_corners=False)`` (bilinear in 2-D), as Captum's
``LayerAttribution.interpolate`` does.

Display conventions: 3-D volumes are drawn like nilearn's neurological view
of a RAS+ volume (axial and coronal cuts: x to the right, so the right
hemisphere is on the right; sagittal cuts: y to the right; z and y upwards).
A nibabel ``bg_img`` is re-oriented to the closest RAS+ orientation
(``nibabel.as_closest_canonical``: LAS, LPS, oblique scans alike); a map
given as an array is taken in ``bg_img``'s stored axis order and re-oriented
with it, a map given as a nibabel image is resampled onto it in world
coordinates. Without an affine (arrays only) nothing can be re-oriented:
pass canonical (RAS+) arrays, e.g. from :func:`captum_smocam.nifti.load_scan`
without metadata. 2-D maps are
drawn as images (row 0 at the top). ``cut_coords`` are millimetres, as in
nilearn, when the position of the voxels is known (``bg_img`` a nibabel image:
its affine), and voxel indices otherwise; panel titles say which
(``axial z=12 mm`` or ``axial z=30``).
"""
from __future__ import annotations

from .charts import plot_asymmetry, plot_convergence, plot_region_attention
from .maps import plot_attribution, plot_comparison

__all__ = [
    "plot_attribution",
    "plot_comparison",
    "plot_region_attention",
    "plot_convergence",
    "plot_asymmetry",
]
