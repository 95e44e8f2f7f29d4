"""A tiny study for cohort-level tests: synthetic subjects and a random VGG3D checkpoint on their grid."""
import torch

from captum_smocam.models import VGG3D, save_checkpoint
from captum_smocam.synth import STRUCTURE_NAMES, default_grid, write_cohort


def make_tiny_study(root, n_subjects, spacing=12.0):
    """Write ``n_subjects`` synthetic subjects to ``root/data`` and a tiny random VGG3D to ``root/tiny.pt``.

    At 12 mm the grid is 14 x 17 x 15 (tiny and non-cubic). Returns ``root``.
    """
    write_cohort(root / "data", n_subjects, spacing=spacing, show_progress=False)
    shape, affine = default_grid(spacing)
    torch.manual_seed(0)
    model = VGG3D(len(STRUCTURE_NAMES), channels=(4, 8), output_mean=[5.0] * 16, output_std=[0.5] * 16).eval()
    meta = {"output_names": list(STRUCTURE_NAMES), "input_shape": list(shape), "affine": affine.tolist(),
            "intensity_normalization": "zscore_nonzero", "default_layer": "features.block2", "output_units": "cm3"}
    save_checkpoint(root / "tiny.pt", model, meta)
    return root
