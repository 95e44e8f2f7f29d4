"""Tests of captum_smocam.regions: region tables, LUT parsing, aggregation."""
import types

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from captum_smocam.regions import (
    REGION_TABLE_COLUMNS,
    aggregate_region_tables,
    as_spatial_array,
    get_region_table,
    read_lut,
    upsample_to,
)

SHAPE = (7, 8, 9)


@pytest.fixture
def phantom():
    """Labels 0 (background), 3 and 5 in known boxes and a known attribution.

    Region 3: x in [0, 2) -> 2*8*9 = 144 voxels, attribution 2.0 everywhere.
    Region 5: x in [4, 7) and y < 4 -> 3*4*9 = 108 voxels; attribution 1.0,
              except one voxel at -6.0 (negative).
    Background: everything else (252 voxels); attribution 0.5 on x == 2 (72
              voxels), 0 elsewhere.
    """
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[0:2] = 3
    labels[4:7, :4] = 5
    attr = np.zeros(SHAPE, dtype=np.float32)
    attr[0:2] = 2.0
    attr[4:7, :4] = 1.0
    attr[5, 1, 1] = -6.0
    attr[2] = 0.5
    return attr, labels


def test_region_table_known_sums_and_shares(phantom):
    attr, labels = phantom
    table = get_region_table(attr, labels, {3: "caudate", 5: "putamen"})
    assert list(table.columns) == list(REGION_TABLE_COLUMNS)
    assert table["label"].tolist() == [3, 5]  # sorted by share; background omitted
    row3, row5 = table.iloc[0], table.iloc[1]
    assert row3["name"] == "caudate" and row5["name"] == "putamen"
    assert row3["n_voxels"] == 144 and row5["n_voxels"] == 108
    # positive only: the -6 voxel counts as 0
    assert row3["attention_sum"] == pytest.approx(288.0)
    assert row5["attention_sum"] == pytest.approx(107.0)
    assert row5["attention_mean"] == pytest.approx(107.0 / 108)
    total = 288.0 + 107.0 + 36.0  # background attention counts in the total
    assert table.attrs["total_attention"] == pytest.approx(total)
    assert row3["share"] == pytest.approx(288.0 / total)
    assert row5["share"] == pytest.approx(107.0 / total)
    assert table["share"].sum() == pytest.approx(1 - 36.0 / total)


def test_region_table_signed_and_background(phantom):
    attr, labels = phantom
    table = get_region_table(attr, labels, positive_only=False, include_background=True)
    by_label = table.set_index("label")
    total = 288.0 + (107.0 - 6.0) + 36.0
    assert by_label.loc[5, "attention_sum"] == pytest.approx(101.0)
    assert by_label.loc[0, "attention_sum"] == pytest.approx(36.0)
    assert by_label.loc[0, "n_voxels"] == 7 * 8 * 9 - 144 - 108
    assert by_label.loc[0, "name"] == "background"
    assert by_label.loc[3, "name"] == "label_3"
    assert table["share"].sum() == pytest.approx(1.0)
    assert by_label.loc[3, "share"] == pytest.approx(288.0 / total)
    assert table["label"].tolist() == [3, 5, 0]


def test_region_table_accepts_tensors_batch_dims_and_nifti_labels(phantom):
    attr, labels = phantom
    expected = get_region_table(attr, labels)
    img = nib.Nifti1Image(labels.astype(np.float32), np.eye(4))
    got = get_region_table(torch.from_numpy(attr)[None, None], img, map_affine=np.eye(4))
    pd.testing.assert_frame_equal(got, expected)
    with pytest.raises(ValueError, match="map's grid is unknown"):  # a NIfTI label map needs the map's grid
        get_region_table(attr, img)
    got = get_region_table(attr[None], torch.from_numpy(labels.astype(np.int64)))
    pd.testing.assert_frame_equal(got, expected)


def test_region_table_upsamples_layer_resolution_map():
    labels = np.zeros(SHAPE, dtype=int)
    labels[:3] = 1
    labels[4:] = 2
    # A layer-resolution map of the model grid (info says which), labels on that grid.
    info = types.SimpleNamespace(grid_shape=SHAPE, grid_affine=np.eye(4))
    # constant coarse map: every label-grid voxel gets the same value
    table = get_region_table(np.full((4, 4, 5), 0.25), labels, include_background=True, info=info)
    for _, row in table.iterrows():
        assert row["attention_sum"] == pytest.approx(0.25 * row["n_voxels"], rel=1e-6)
        assert row["attention_mean"] == pytest.approx(0.25, rel=1e-6)
    # coarse map hot in its first x-half -> region 1 (low x) gets more than region 2
    coarse = np.zeros((4, 4, 5))
    coarse[:2] = 1.0
    table = get_region_table(coarse, labels, info=info).set_index("label")
    assert table.loc[1, "attention_mean"] > 0.9
    assert table.loc[2, "attention_mean"] < 0.2
    # compare with the explicit trilinear upsampling used by Captum
    fine = torch.nn.functional.interpolate(
        torch.tensor(coarse, dtype=torch.float32)[None, None], size=SHAPE, mode="trilinear", align_corners=False
    )[0, 0].numpy()
    assert table.loc[1, "attention_sum"] == pytest.approx(fine[labels == 1].sum(), rel=1e-5)
    # Without a grid, two shapes are refused (which grid the coarse map covers is a guess), issue 20.
    with pytest.raises(ValueError, match=r"shape \(4, 4, 5\) and the labels \(7, 8, 9\), and neither carries a grid"):
        get_region_table(coarse, labels)
    pd.testing.assert_frame_equal(get_region_table(upsample_to(coarse, SHAPE), labels).set_index("label"), table)


def test_region_table_names_from_lut(tmp_path, phantom):
    attr, labels = phantom
    lut = tmp_path / "lut.txt"
    lut.write_text("# comment\n0 Unknown 0 0 0 0\n3   Left-Caudate 1 2 3 0\n5\tLeft-Putamen\t1 2 3 0\n")
    table = get_region_table(attr, labels, lut, include_background=True)
    assert set(table["name"]) == {"Unknown", "Left-Caudate", "Left-Putamen"}
    table = get_region_table(attr, labels, str(lut))
    assert table["name"].tolist() == ["Left-Caudate", "Left-Putamen"]


def test_region_table_errors(phantom):
    attr, labels = phantom
    with pytest.raises(ValueError, match=r"\(9, 8, 7\)"):
        get_region_table(np.zeros((9, 8, 7)), labels)  # swapped axes
    with pytest.raises(ValueError, match=r"\(2, 1, 7, 8, 9\)"):
        get_region_table(np.zeros((2, 1, 7, 8, 9)), labels)  # a batch of two
    with pytest.raises(ValueError, match="integers"):
        get_region_table(attr, labels + 0.5)
    with pytest.raises(TypeError, match="names"):
        get_region_table(attr, labels, names=[1, 2])
    with pytest.raises(TypeError, match="str"):
        get_region_table("attr", labels)


def test_region_table_zero_attention_gives_nan_shares(phantom):
    _, labels = phantom
    table = get_region_table(-np.ones(SHAPE), labels)
    assert table["attention_sum"].tolist() == [0.0, 0.0]
    assert table["share"].isna().all()


def test_as_spatial_array_and_upsample_to():
    assert as_spatial_array(np.zeros((1, 1, 7, 8, 9))).shape == SHAPE
    assert as_spatial_array(np.zeros((8, 9))).shape == (8, 9)
    assert as_spatial_array(np.zeros((1, 8, 9)), 2).shape == (8, 9)
    with pytest.raises(ValueError, match="fewer"):
        as_spatial_array(np.zeros((8, 9)), 3)
    up = upsample_to(np.arange(4.0).reshape(2, 2), (4, 4))
    assert up.shape == (4, 4) and up.dtype == np.float32
    # align_corners=False: the first output row sits a quarter input pixel inside
    assert up[0, 0] == pytest.approx(0.0) and up[1, 0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="mode"):
        upsample_to(np.zeros((2, 2)), (4, 4), mode="cubic")


def test_read_lut_comments_and_spacing(tmp_path):
    p = tmp_path / "FreeSurferColorLUT.txt"
    p.write_text(
        "#$Id: FreeSurferColorLUT.txt $\n"
        "\n"
        "#No. Label Name:                            R   G   B   A\n"
        "\n"
        "0   Unknown                                 0   0   0   0\n"
        "   2\tLeft-Cerebral-White-Matter\t\t245 245 245 0   \n"
        "17  Left-Hippocampus     220 216  20   0  # inline comment\n"
        "\t\n"
        "1000    ctx-lh-unknown                      25  5   25  0\n"
    )
    assert read_lut(p) == {
        0: "Unknown",
        2: "Left-Cerebral-White-Matter",
        17: "Left-Hippocampus",
        1000: "ctx-lh-unknown",
    }


def test_read_lut_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_lut(tmp_path / "nope.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("0 Unknown 0 0 0 0\nLeft-Hippocampus 17 1 2 3 0\n")
    with pytest.raises(ValueError, match=r"bad.txt:2"):
        read_lut(bad)
    dup = tmp_path / "dup.txt"
    dup.write_text("4 A 0 0 0 0\n4 B 0 0 0 0\n")
    with pytest.raises(ValueError, match="already named 'A'"):
        read_lut(dup)


def test_aggregate_region_tables_mean_sd_n():
    t1 = pd.DataFrame({"label": [1, 2], "name": ["a", "b"], "share": [0.6, 0.2], "attention_mean": [1.0, 0.5]})
    t2 = pd.DataFrame({"label": [1, 2], "name": ["a", "b"], "share": [0.2, 0.4], "attention_mean": [3.0, 0.7]})
    t3 = pd.DataFrame({"label": [2], "name": ["b"], "share": [0.9], "attention_mean": [0.3]})
    agg = aggregate_region_tables({"s1": t1, "s2": t2, "s3": t3})
    assert list(agg.columns) == ["name", "n", "share_mean", "share_sd", "attention_mean_mean", "attention_mean_sd"]
    agg = agg.set_index("name")
    assert agg.loc["a", "n"] == 2 and agg.loc["b", "n"] == 3
    assert agg.loc["b", "share_mean"] == pytest.approx(0.5)
    assert agg.loc["b", "share_sd"] == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))
    assert agg.loc["a", "attention_mean_mean"] == pytest.approx(2.0)
    assert agg.index.tolist() == ["b", "a"]  # sorted by share_mean
    one = aggregate_region_tables([t3], by="label", columns="share")
    assert one.columns.tolist() == ["label", "n", "share_mean", "share_sd"]
    assert np.isnan(one.loc[0, "share_sd"])


def test_aggregate_real_tables(phantom):
    attr, labels = phantom
    tables = [get_region_table(attr * s, labels) for s in (1.0, 2.0, 3.0)]
    agg = aggregate_region_tables(tables, by="label")
    # shares do not change when the map is scaled; means scale with it
    assert agg["share_sd"].max() == pytest.approx(0.0, abs=1e-12)
    assert agg.set_index("label").loc[3, "attention_mean_mean"] == pytest.approx(4.0)


def test_aggregate_errors():
    t = pd.DataFrame({"name": ["a"], "share": [1.0]})
    with pytest.raises(ValueError, match="empty"):
        aggregate_region_tables([])
    with pytest.raises(ValueError, match="attention_mean"):
        aggregate_region_tables([t])
    with pytest.raises(TypeError, match="list"):
        aggregate_region_tables([[1, 2]])


# --- geometry: a map on the model grid and a label map on its own grid (issue 20) ----------------------------

MNI2MM_LAS = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])


def _world(shape, affine):
    ijk = np.indices(shape).reshape(3, -1).astype(np.float64)
    return (affine[:3, :3] @ ijk + affine[:3, 3:]).reshape(3, *shape)


def _hippocampi(shape, affine):
    """Labels 17 (left, x < 0) and 53 (right) as 10 mm balls at x = -20 / +20 mm, y = -20, z = -10."""
    x, y, z = _world(shape, affine)
    labels = np.zeros(shape, np.int16)
    labels[(x + 20) ** 2 + (y + 20) ** 2 + (z + 10) ** 2 <= 100] = 17
    labels[(x - 20) ** 2 + (y + 20) ** 2 + (z + 10) ** 2 <= 100] = 53
    return labels


@pytest.mark.parametrize("scan_grid", ["model", "other"])
def test_region_table_resamples_in_world_coordinates(tmp_path, scan_grid):
    """On today's main the same call swapped left and right (LAS model grid) or misplaced the map."""
    from captum_smocam.nifti import load_label_map, load_scan

    model_shape = (91, 109, 91)
    meta = {"input_shape": list(model_shape), "affine": MNI2MM_LAS.tolist(), "intensity_normalization": "none"}
    if scan_grid == "model":
        shape, affine = model_shape, MNI2MM_LAS
    else:  # 1.5 mm RAS, shifted: another shape, orientation and origin than the model's
        shape, affine = (110, 130, 100), np.array([[1.5, 0, 0, -80], [0, 1.5, 0, -110], [0, 0, 1.5, -60],
                                                   [0, 0, 0, 1]])
    x = _world(shape, affine)[0]
    head = (np.abs(x) < 70).astype(np.float32) + 1.0
    nib.save(nib.Nifti1Image(head, affine), tmp_path / "t1.nii.gz")
    nib.save(nib.Nifti1Image(_hippocampi(shape, affine), affine), tmp_path / "labels.nii.gz")
    _, info = load_scan(tmp_path / "t1.nii.gz", meta)
    labels, lab_affine = load_label_map(tmp_path / "labels.nii.gz", info)

    # The mask on the model grid: 1 over the left hippocampus (world x < 0), 0 elsewhere.
    mask = (_hippocampi(model_shape, MNI2MM_LAS) == 17).astype(np.float32)
    lut = {17: "Left-Hippocampus", 53: "Right-Hippocampus"}
    with pytest.raises(ValueError, match=r"map.s grid is unknown, .*: pass info="):
        get_region_table(mask, labels, lut)  # the documented call of today's main: refused, not wrong
    table = get_region_table(mask, labels, lut, info=info).set_index("name")
    assert table.loc["Left-Hippocampus", "attention_mean"] > 0.85
    assert table.loc["Right-Hippocampus", "attention_mean"] == pytest.approx(0.0, abs=1e-6)
    assert table.loc["Left-Hippocampus", "share"] > 0.85  # the rest: partial voxels at its edge (background)
    # The same with a layer-resolution map and with the label image itself (its own affine).
    coarse = mask[::2, ::2, ::2]
    img = nib.load(tmp_path / "labels.nii.gz")
    t2 = get_region_table(coarse, img, lut, info=info).set_index("name")
    assert t2.loc["Left-Hippocampus", "share"] > 0.8 and t2.loc["Right-Hippocampus", "share"] < 0.05
    # A plain label array of another shape than the map is refused.
    if scan_grid == "other":
        with pytest.raises(ValueError, match=r"shape \(91, 109, 91\) and the labels \(110, 130, 100\)"):
            get_region_table(mask, np.asarray(labels), lut)
        with pytest.raises(ValueError, match=r"labels have shape \(110, 130, 100\) but the map's grid is"):
            get_region_table(mask, np.asarray(labels), lut, info=info)
