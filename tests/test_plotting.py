"""Tests of captum_smocam.plotting (Agg backend; figures closed by conftest)."""
import matplotlib.pyplot as plt
from matplotlib.container import BarContainer
import nibabel as nib
import numpy as np
import pytest
import torch

from captum_smocam.plotting import (
    plot_asymmetry,
    plot_attribution,
    plot_comparison,
    plot_convergence,
    plot_region_attention,
)
from captum_smocam.regions import aggregate_region_tables, get_region_table, upsample_to

SHAPE = (7, 8, 9)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000


@pytest.fixture
def scan():
    return np.random.default_rng(0).random(SHAPE).astype(np.float32) + 1.0


def overlay(ax):
    """The attribution layer drawn in a panel (the last image)."""
    return np.ma.getdata(ax.images[-1].get_array())


def test_plot_attribution_3d_png_and_cuts_through_maximum(tmp_path, scan):
    attr = np.zeros(SHAPE, dtype=np.float32)
    attr[2, 5, 6] = 3.0
    attr[1, 1, 1] = 1.0
    out = tmp_path / "attr.png"
    fig = plot_attribution(attr, scan, output_file=out, title="SMOCAM")
    assert_png(out)
    panels = fig.axes[:3]
    assert [ax.get_title() for ax in panels] == ["axial z=6", "coronal y=5", "sagittal x=2"]
    # axial: x to the right, y upwards -> the drawn array is data[:, :, z].T
    np.testing.assert_array_equal(overlay(panels[0]), attr[:, :, 6].T)
    np.testing.assert_array_equal(overlay(panels[1]), attr[:, 5, :].T)
    np.testing.assert_array_equal(overlay(panels[2]), attr[2, :, :].T)
    np.testing.assert_array_equal(np.ma.getdata(panels[0].images[0].get_array()), scan[:, :, 6].T)
    assert len(fig.axes) == 4  # colour bar
    assert fig._suptitle.get_text() == "SMOCAM"


def test_plot_attribution_layer_resolution_tensor(tmp_path, scan):
    coarse = torch.rand(1, 1, 4, 4, 5)
    fig = plot_attribution(coarse, torch.from_numpy(scan)[None, None], cut_coords=(3, 4, 5), colorbar=False,
                           output_file=tmp_path / "layer.png")
    assert_png(tmp_path / "layer.png")
    fine = upsample_to(coarse, SHAPE)
    np.testing.assert_allclose(overlay(fig.axes[0]), fine[:, :, 5].T, rtol=1e-6)
    assert len(fig.axes) == 3


def test_plot_attribution_without_background_and_threshold(scan):
    attr = np.linspace(-1, 1, np.prod(SHAPE)).reshape(SHAPE)
    fig = plot_attribution(attr, threshold=0.5, display_mode="z", cut_coords=[0, 4, 8])
    assert [ax.get_title() for ax in fig.axes[:3]] == ["axial z=0", "axial z=4", "axial z=8"]
    shown = fig.axes[1].images[-1].get_array()
    assert np.array_equal(np.ma.getmaskarray(shown), np.abs(attr[:, :, 4].T) < 0.5)
    norm = fig.axes[1].images[-1].norm
    assert (norm.vmin, norm.vmax) == (-1.0, 1.0)  # signed map -> symmetric default


def test_plot_attribution_2d_map(tmp_path):
    m = np.random.default_rng(1).random((8, 11))
    fig = plot_attribution(m, np.ones((16, 22)), output_file=tmp_path / "2d.png")
    assert_png(tmp_path / "2d.png")
    assert overlay(fig.axes[0]).shape == (16, 22)
    fig = plot_attribution(torch.tensor(m), colorbar=False)
    np.testing.assert_allclose(overlay(fig.axes[0]), m)


def test_plot_attribution_outline_and_nifti_background(tmp_path):
    bg = nib.Nifti1Image(np.ones(SHAPE, np.float32), np.diag([1.0, 1.0, 2.5, 1.0]))
    outline = np.zeros(SHAPE, bool)
    outline[2:5, 3:6, 3:7] = True
    attr = outline.astype(float)
    fig = plot_attribution(attr, bg, outline=outline, output_file=tmp_path / "o.png")
    assert_png(tmp_path / "o.png")
    axial, coronal = fig.axes[0], fig.axes[1]
    assert len(axial.collections) >= 1  # the contour
    assert coronal.get_aspect() == pytest.approx(2.5)  # z voxels 2.5 times taller than x
    assert axial.get_aspect() == pytest.approx(1.0)


def test_plot_attribution_axes_and_figure_arguments(scan):
    fig, axs = plt.subplots(1, 3)
    got = plot_attribution(scan, axes=list(axs), colorbar=False)
    assert got is fig and all(len(ax.images) == 1 for ax in axs)
    fig, ax = plt.subplots()
    got = plot_attribution(scan, display_mode="xz", axes=ax, colorbar=False, title="t")
    assert got is fig and len(fig.axes) == 3  # the given axes split in two
    fig = plt.figure()
    assert plot_attribution(scan, figure=fig, colorbar=False) is fig


def test_plot_attribution_errors(scan):
    with pytest.raises(ValueError, match="'axial'"):
        plot_attribution(scan, display_mode="axial")
    with pytest.raises(ValueError, match="12"):
        plot_attribution(scan, display_mode="z", cut_coords=12)
    with pytest.raises(ValueError, match=r"\(1, 2\)"):
        plot_attribution(scan, cut_coords=(1, 2))
    with pytest.raises(ValueError, match=r"\(9, 8, 7\)"):
        plot_attribution(np.zeros((9, 8, 7)), scan)  # swapped axes
    with pytest.raises(ValueError, match=r"\(2, 7, 8, 9\)"):
        plot_attribution(np.zeros((2, *SHAPE)))
    with pytest.raises(ValueError, match="3 Axes"):
        plot_attribution(scan, axes=[plt.subplots()[1]])


def test_plot_comparison_normalised_rows(tmp_path, scan):
    rng = np.random.default_rng(2)
    maps = {
        "Grad-CAM": torch.rand(4, 4, 5) * 7.0,  # layer resolution
        "Saliency": rng.random(SHAPE) * 0.01,
        "SMOCAM": rng.random((1, 1, *SHAPE)) * 3.0,
    }
    maps["Saliency"][2, 5, 6] = 1.0  # not the first map: cuts still follow Grad-CAM
    outline = np.zeros(SHAPE, bool)
    outline[2:5, 2:5, 2:6] = True
    out = tmp_path / "cmp.png"
    fig = plot_comparison(maps, scan, outline=outline, output_file=out, title="right lateral ventricle")
    assert_png(out)
    grid = np.array(fig.axes[:9]).reshape(3, 3)
    assert len(fig.axes) == 10  # 3 x 3 + one colour bar
    for r in range(3):
        assert [ax.get_title() for ax in grid[0]] == [grid[0, c].get_title() for c in range(3)]
        row_max = max(float(overlay(ax).max()) for ax in grid[r])
        assert row_max <= 1.0 + 1e-6
        assert grid[r, 0].images[-1].norm.vmax == 1.0
    peak = np.unravel_index(np.argmax(upsample_to(maps["Grad-CAM"], SHAPE)), SHAPE)
    assert grid[0, 0].get_title() == f"axial z={peak[2]}"
    assert grid[1, 0].get_ylabel().startswith("Saliency\n(max 1)")


def test_plot_comparison_share_scale_and_2d(tmp_path):
    maps = {"a": np.full(SHAPE, 2.0), "b": np.full((4, 4, 5), 5.0)}
    fig = plot_comparison(maps, share_scale=True, cut_coords=(1, 2, 3), display_mode="ortho")
    norm = fig.axes[0].images[-1].norm
    assert (norm.vmin, norm.vmax) == (0.0, 5.0)
    np.testing.assert_allclose(overlay(fig.axes[0]), 2.0)
    out = tmp_path / "cmp2d.png"
    fig = plot_comparison({"a": np.random.rand(8, 11), "b": np.random.rand(4, 6)}, output_file=out)
    assert_png(out)
    assert len(fig.axes) == 3  # 2 rows x 1 column + colour bar


def test_plot_comparison_errors(scan):
    with pytest.raises(ValueError, match="non-empty dict"):
        plot_comparison({})
    with pytest.raises(ValueError, match=r"\(9, 8, 7\)"):
        plot_comparison({"a": np.zeros((9, 8, 7))}, scan)


@pytest.fixture
def region_table():
    labels = np.zeros(SHAPE, int)
    labels[:2] = 1
    labels[2:4] = 2
    labels[4:] = 3
    attr = np.zeros(SHAPE)
    attr[:2] = 0.1
    attr[2:4] = 1.0
    attr[4:] = 0.5
    return get_region_table(attr, labels, {1: "caudate", 2: "putamen", 3: "pallidum"})


def test_plot_region_attention(tmp_path, region_table):
    out = tmp_path / "regions.png"
    fig = plot_region_attention(region_table, output_file=out, title="regions")
    assert_png(out)
    ax = fig.axes[0]
    widths = [p.get_width() for p in ax.patches]
    assert widths == sorted(widths, reverse=True)
    np.testing.assert_allclose(widths, region_table.sort_values("share", ascending=False)["share"])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["putamen", "pallidum", "caudate"]
    fig = plot_region_attention(region_table, column="attention_mean", top=2)
    assert len(fig.axes[0].patches) == 2


def test_plot_region_attention_aggregated_with_error_bars(region_table):
    agg = aggregate_region_tables([region_table, region_table.assign(share=region_table["share"] * 0.5)])
    fig, ax = plt.subplots()
    assert plot_region_attention(agg, column="share_mean", ax=ax) is fig
    bars = [c for c in ax.containers if isinstance(c, BarContainer)][0]
    assert bars.errorbar is not None  # x error bars drawn
    segments = bars.errorbar.lines[2][0].get_segments()
    sd = agg.set_index("name").loc["putamen", "share_sd"]
    assert sd > 0 and segments[0][1][0] - segments[0][0][0] == pytest.approx(2 * sd)


def test_plot_region_attention_errors(region_table):
    with pytest.raises(ValueError, match="'volume'"):
        plot_region_attention(region_table, column="volume")
    with pytest.raises(ValueError, match="top"):
        plot_region_attention(region_table, top=0)


def test_plot_convergence(tmp_path):
    n_steps, n = 20, 3
    steps = torch.arange(n_steps, dtype=torch.float32)[:, None]
    history = {
        "total": 2.0 / (1 + steps) + torch.arange(n)[None] * 0.1,
        "distance": (1.0 / (1 + steps)).expand(n_steps, n),
        "l2": torch.full((n_steps, n), 0.3),
        "smooth": torch.full((n_steps, n), 0.2),
        "best_step": torch.tensor([19, 18, 19]),
    }
    out = tmp_path / "conv.png"
    fig = plot_convergence(history, output_file=out, title="SMOCAM")
    assert_png(out)
    ax = fig.axes[0]
    total_line = ax.lines[0]
    np.testing.assert_allclose(total_line.get_ydata(), history["total"].mean(dim=1).numpy(), rtol=1e-6)
    assert len(ax.collections) == 4  # min-max bands
    best_lines = [l for l in ax.lines if l.get_linestyle() == "--"]
    assert sorted(l.get_xdata()[0] for l in best_lines) == [18, 19]
    assert ax.get_yscale() == "linear"
    # 1-D terms (one example), a plain int best_step, log scale over many decades
    fig = plot_convergence({"total": np.logspace(2, -3, 10), "distance": [1.0] * 10, "best_step": 7})
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and len(ax.collections) == 0


def test_plot_convergence_errors():
    with pytest.raises(ValueError, match="loss"):
        plot_convergence({"lr": [1, 2]})
    with pytest.raises(ValueError, match=r"4 steps but 'total' has 5"):
        plot_convergence({"total": np.ones(5), "l2": np.ones(4)})
    with pytest.raises(TypeError, match="list"):
        plot_convergence([1, 2, 3])


def test_plot_asymmetry(tmp_path):
    ref = np.random.default_rng(3).normal(0.0, 0.03, 400)
    out = tmp_path / "asym.png"
    fig = plot_asymmetry(torch.tensor(ref), 0.12, 0.01, output_file=out, title="hippocampi")
    assert_png(out)
    ax = fig.axes[0]
    assert [l.get_xdata()[0] for l in ax.lines] == [0.12, 0.01]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    rank = round(100 * np.mean(ref <= 0.01))
    assert texts[1] == "true value: 0.12 (percentile rank 100)"
    assert texts[2] == f"model prediction: 0.01 (percentile rank {rank})"
    assert sum(p.get_height() for p in ax.patches) == 400
    fig = plot_asymmetry(ref, [0.1, -0.08], [0.0, -0.01], bins=10)
    ax = fig.axes[0]
    assert len(ax.lines) == 4 and len(ax.patches) == 10
    assert [t.get_text() for t in ax.get_legend().get_texts()][1:] == ["true value (n=2)", "model prediction (n=2)"]


def test_plot_asymmetry_errors():
    with pytest.raises(ValueError, match="1 value.*has 2"):
        plot_asymmetry(np.zeros(10), [0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="finite"):
        plot_asymmetry([np.nan], 0.1)
    with pytest.raises(ValueError, match="bins"):
        plot_asymmetry(np.zeros(10), 0.1, bins=0)


def test_saved_figures_are_closed_unless_the_caller_owns_them(tmp_path, scan):
    """A figure a plot function made and saved is closed (no pyplot leak in loops); the caller's stays open."""
    fig = plot_attribution(scan, output_file=tmp_path / "a.png")
    assert not plt.fignum_exists(fig.number) and len(fig.axes) == 4  # closed, still inspectable
    fig = plot_attribution(scan)
    assert plt.fignum_exists(fig.number)  # nothing saved: the caller may still show it
    own_fig, own_ax = plt.subplots()
    plot_region_attention(pd_table(), ax=own_ax, output_file=tmp_path / "r.png")
    assert plt.fignum_exists(own_fig.number)
    assert_png(tmp_path / "a.png")
    assert_png(tmp_path / "r.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "r.png"]


def pd_table():
    import pandas as pd

    return pd.DataFrame({"name": ["a", "b"], "share": [0.4, 0.1]})


def test_cut_coords_are_millimetres_when_bg_img_has_an_affine(scan):
    """nilearn's convention: with a nibabel background, cut_coords are world mm, mapped through its affine."""
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = (-6.0, -10.0, 8.0)  # voxel (i, j, k) is at (2i - 6, 3j - 10, 4k + 8) mm
    bg = nib.Nifti1Image(scan, affine)
    attr = np.random.default_rng(5).random(SHAPE)
    fig = plot_attribution(attr, bg, cut_coords=(0.0, -4.0, 20.0), colorbar=False)  # voxel (3, 2, 3)
    assert [ax.get_title() for ax in fig.axes] == ["axial z=20 mm", "coronal y=-4 mm", "sagittal x=0 mm"]
    np.testing.assert_array_equal(overlay(fig.axes[0]), attr[:, :, 3].T.astype(np.float32))
    np.testing.assert_array_equal(overlay(fig.axes[1]), attr[:, 2, :].T.astype(np.float32))
    np.testing.assert_array_equal(overlay(fig.axes[2]), attr[3, :, :].T.astype(np.float32))
    # The nearest voxel, one axis at a time; an LPS affine (x flipped) cuts the mirrored plane.
    fig = plot_attribution(attr, bg, display_mode="z", cut_coords=[9.0, 13.9], colorbar=False)
    assert [ax.get_title() for ax in fig.axes] == ["axial z=8 mm", "axial z=12 mm"]
    lps = affine.copy()
    lps[0, 0], lps[0, 3] = -2.0, 6.0  # voxel i is at 6 - 2i mm
    fig = plot_attribution(attr, nib.Nifti1Image(scan, lps), display_mode="x", cut_coords=4.0, colorbar=False)
    np.testing.assert_array_equal(overlay(fig.axes[0]), attr[1, :, :].T.astype(np.float32))
    with pytest.raises(ValueError, match=r"50.0 mm .* along axis z is outside"):
        plot_attribution(attr, bg, display_mode="z", cut_coords=50.0)
    # Without an affine they stay voxel indices.
    fig = plot_attribution(attr, scan, display_mode="z", cut_coords=3, colorbar=False)
    assert fig.axes[0].get_title() == "axial z=3"


# --- orientation: the right hemisphere on the right for any stored orientation (issue 20) -------------------

def _hemisphere_images(orientation):
    """A head and a map with a blob at world x > 0 (right), stored as RAS, LAS, LPS or an oblique grid."""
    shape = (12, 10, 9)
    ras = np.diag([2.0, 2.0, 2.0, 1.0])
    ras[:3, 3] = [-11.0, -9.0, -8.0]  # world x of voxel i is 2 i - 11: i >= 6 is right
    head = np.ones(shape, np.float32)
    head[:, :, :2] = 0.0
    blob = np.zeros(shape, np.float32)
    blob[8:11, 4:6, 4:6] = 1.0  # x = 5..9 mm: right
    data, affine = [head, blob], ras
    if orientation in ("LAS", "LPS"):
        flip = [0] if orientation == "LAS" else [0, 1]
        data = [np.flip(d, axis=flip).copy() for d in data]
        affine = ras.copy()
        for ax in flip:
            affine[:, ax] *= -1
            affine[:3, 3] += ras[:3, ax] * (shape[ax] - 1)
    elif orientation == "oblique":  # axes stored as (y, x, z) with x flipped, and a 10 degree tilt
        data = [np.flip(np.transpose(d, (1, 0, 2)), axis=1).copy() for d in data]
        perm = np.zeros((4, 4))
        perm[1, 0] = perm[3, 3] = perm[2, 2] = 1.0
        perm[0, 1] = -1.0
        perm[0, 3] = shape[0] - 1
        c, s = np.cos(np.radians(10)), np.sin(np.radians(10))
        tilt = np.array([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1.0]])
        affine = tilt @ ras @ perm
    return nib.Nifti1Image(data[0], affine), nib.Nifti1Image(data[1], affine)


@pytest.mark.parametrize("orientation", ["RAS", "LAS", "LPS", "oblique"])
def test_right_hemisphere_is_drawn_on_the_right(orientation):
    """On today's main the LAS copy drew the blob at x > 0 on the left (arrays were shown in stored order)."""
    head, blob = _hemisphere_images(orientation)
    for attr in (blob, np.asarray(blob.dataobj)):  # an image, or an array in the background's axis order
        fig = plot_attribution(attr, head, display_mode="z", threshold=0.5)
        drawn = overlay(fig.axes[0])  # rows: y, columns: x (origin "lower")
        cols = np.nonzero(drawn.max(axis=0) > 0.5)[0]
        assert cols.size and cols.min() > drawn.shape[1] / 2, (orientation, cols, drawn.shape)
        plt.close(fig)
    fig = plot_comparison({"blob": blob}, head, display_mode="z", threshold=0.5)
    drawn = overlay(fig.axes[0])
    assert np.nonzero(drawn.max(axis=0) > 0.5)[0].min() > drawn.shape[1] / 2
