"""Make the figures of docs/visualisation.md from synthetic arrays.

Run from the repository root:

    .venv/bin/python docs/figures/make_visualisation_figures.py

Everything here is synthetic: Gaussian "attention" blobs placed at MNI
coordinates over nilearn's bundled MNI152 template (read from disk, nothing
downloaded), ellipsoid "structures", made-up loss curves and a made-up
asymmetry distribution. The figures show what the plots look like, not
results.
"""
from __future__ import annotations

import os
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from nilearn.datasets import load_mni152_template  # noqa: E402

from captum_smocam.plotting import (  # noqa: E402
    plot_asymmetry,
    plot_attribution,
    plot_comparison,
    plot_convergence,
    plot_region_attention,
)
from captum_smocam.regions import get_region_table, upsample_to  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RNG = np.random.default_rng(0)

#: Approximate MNI centres (mm) and semi-axes (mm) of a few synthetic structures.
STRUCTURES = {
    17: ("Left-Hippocampus", (-26, -22, -14), (6, 14, 6)),
    53: ("Right-Hippocampus", (27, -22, -14), (6, 14, 6)),
    18: ("Left-Amygdala", (-23, -4, -20), (6, 6, 6)),
    54: ("Right-Amygdala", (24, -4, -20), (6, 6, 6)),
    4: ("Left-Lateral-Ventricle", (-14, -10, 18), (6, 24, 8)),
    43: ("Right-Lateral-Ventricle", (15, -10, 18), (6, 24, 8)),
    10: ("Left-Thalamus", (-11, -18, 6), (7, 10, 7)),
    49: ("Right-Thalamus", (12, -18, 6), (7, 10, 7)),
    11: ("Left-Caudate", (-13, 10, 10), (5, 10, 8)),
    50: ("Right-Caudate", (14, 10, 10), (5, 10, 8)),
}


def world_grid(img):
    ijk = np.indices(img.shape, dtype=np.float64).reshape(3, -1)
    xyz = img.affine[:3, :3] @ ijk + img.affine[:3, 3:4]
    return xyz.reshape(3, *img.shape)


def blob(xyz, centre, sigma):
    d2 = sum((xyz[i] - centre[i]) ** 2 for i in range(3))
    return np.exp(-d2 / (2.0 * sigma**2)).astype(np.float32)


def ellipsoid(xyz, centre, axes):
    return sum(((xyz[i] - centre[i]) / axes[i]) ** 2 for i in range(3)) <= 1.0


def block_mean(vol, f):
    """Average f x f x f blocks: a fake layer-resolution map."""
    s = [n // f for n in vol.shape]
    v = vol[: s[0] * f, : s[1] * f, : s[2] * f]
    return v.reshape(s[0], f, s[1], f, s[2], f).mean(axis=(1, 3, 5))


def main(out_dir: str = HERE) -> None:
    os.makedirs(out_dir, exist_ok=True)
    template = load_mni152_template(resolution=2)  # 99 x 117 x 95, 2 mm
    xyz = world_grid(template)
    brain = template.get_fdata() > 0.2 * template.get_fdata().max()
    labels = np.zeros(template.shape, dtype=np.int32)
    for k, (_, c, a) in STRUCTURES.items():
        labels[ellipsoid(xyz, c, a)] = k
    names = {k: v[0] for k, v in STRUCTURES.items()}
    ventricle = labels == 43

    # A synthetic SMOCAM mask for "Right-Lateral-Ventricle volume": smooth,
    # centred on the ventricle with some spill onto its neighbours, computed
    # at 1/8 of the input resolution (12 x 14 x 11), like a deep layer.
    fine = blob(xyz, (15, -10, 18), 9.0) + 0.35 * blob(xyz, (12, -18, 6), 8.0)
    smocam = block_mean(fine * brain, 8)
    plot_attribution(
        smocam, template, threshold=0.1 * smocam.max(), outline=ventricle,
        title="synthetic SMOCAM mask (12x14x11) over MNI152",
        output_file=os.path.join(out_dir, "plot_attribution.png"),
    )

    # Five synthetic "methods" with different units and textures.
    noise = RNG.standard_normal(template.shape).astype(np.float32)
    occlusion = np.zeros(template.shape, dtype=np.float32)  # 12-voxel patches
    occlusion[:96, :108, :84] = np.kron(block_mean(fine * brain, 12), np.ones((12, 12, 12)))
    maps = {
        "Grad-CAM": block_mean(blob(xyz, (10, -14, 14), 16.0) * brain, 16) * 3e-3,
        "Occlusion": occlusion * 40.0,
        "Saliency": np.abs(noise) * (0.2 + fine) * brain * 1e-4,
        "DeepLIFT": np.abs(noise * fine + 0.3 * RNG.standard_normal(template.shape)) * brain * 0.02,
        "SMOCAM": smocam,
    }
    plot_comparison(
        maps, template, outline=ventricle, threshold=0.15,
        title="synthetic maps, each scaled to its own maximum",
        output_file=os.path.join(out_dir, "plot_comparison.png"),
    )

    # The layer-resolution mask covers the label grid's field of view: upsampled explicitly (region
    # tables refuse two shapes without a grid).
    table = get_region_table(upsample_to(smocam, labels.shape), labels, names)
    plot_region_attention(
        table, title="share of the synthetic mask's attention",
        output_file=os.path.join(out_dir, "plot_region_attention.png"),
    )

    steps = np.arange(200, dtype=np.float64)[:, None]
    scale = 1.0 + 0.3 * RNG.random((1, 4))
    distance = 0.8 * scale * np.exp(-steps / 25.0) + 0.02
    l2 = 0.05 * np.exp(-steps / 60.0) * scale + 0.01
    smooth = 0.12 + 0.08 * (1 - np.exp(-steps / 40.0)) * scale
    history = {"total": distance + l2 + smooth, "distance": distance, "l2": l2, "smooth": smooth,
               "best_step": [196, 199, 187, 199]}
    plot_convergence(
        history, title="synthetic SMOCAM loss terms (4 examples)",
        output_file=os.path.join(out_dir, "plot_convergence.png"),
    )

    reference = RNG.normal(0.0, 0.04, 1000)
    plot_asymmetry(
        reference, 0.14, 0.012, title="synthetic hippocampal asymmetry",
        output_file=os.path.join(out_dir, "plot_asymmetry.png"),
    )
    plt.close("all")
    print(table.head(5).to_string(index=False))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else HERE)
