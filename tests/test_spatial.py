"""captum_smocam.spatial: conversion, upsampling and resampling, on non-cubic grids so that swapped axes fail."""
import nibabel as nib
import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution

from captum_smocam.spatial import (
    INTERPOLATION_MODES,
    as_spatial_array,
    resample,
    to_numpy,
    upsample,
    upsample_to,
)

SHAPE = (7, 8, 9)


def test_to_numpy_accepts_what_it_says_and_names_the_rest():
    t = torch.arange(6.0, requires_grad=True).reshape(2, 3)
    np.testing.assert_array_equal(to_numpy(t), np.arange(6.0).reshape(2, 3))
    img = nib.Nifti1Image(np.arange(504, dtype=np.int16).reshape(SHAPE), np.eye(4))
    assert to_numpy(img).shape == SHAPE and to_numpy(img)[1, 2, 3] == 1 * 72 + 2 * 9 + 3
    assert to_numpy([[1, 2]]).shape == (1, 2)
    with pytest.raises(TypeError, match="map must be .* got str"):
        to_numpy("x", "map")
    with pytest.raises(TypeError, match=r"numpy.ndarray or a torch.Tensor, got list"):
        to_numpy([1], images=False, sequences=False)
    with pytest.raises(TypeError, match="got Nifti1Image"):
        to_numpy(img, images=False)


def test_as_spatial_array_drops_only_size_one_leading_dims():
    x = np.random.default_rng(0).random((1, 1) + SHAPE)
    assert as_spatial_array(x).shape == SHAPE
    np.testing.assert_array_equal(as_spatial_array(x), x[0, 0])
    assert as_spatial_array(np.zeros((1, 8, 9)), 2).shape == (8, 9)
    with pytest.raises(ValueError, match=r"\(2, 1, 7, 8, 9\) has leading dimensions \(2, 1\)"):
        as_spatial_array(np.zeros((2, 1) + SHAPE))
    with pytest.raises(ValueError, match="fewer than the 3 spatial"):
        as_spatial_array(np.zeros((8, 9)), 3)


@pytest.mark.parametrize("coarse", [(3,), (3, 4), (3, 4, 5)])
def test_upsample_is_captums_interpolate_for_any_number_of_dims(coarse):
    x = torch.rand((2, 3) + coarse)
    size = SHAPE[: len(coarse)]
    expected = LayerAttribution.interpolate(x, size, INTERPOLATION_MODES[len(coarse)])
    assert torch.equal(upsample(x, size), expected)
    assert upsample(x, size).shape == (2, 3) + size


def test_upsample_nearest_repeats_voxels_and_bad_calls_name_the_shape():
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    up = upsample(x, (4, 6), "nearest")
    assert torch.equal(up[0, 0], x[0, 0].repeat_interleave(2, 0).repeat_interleave(2, 1))
    with pytest.raises(ValueError, match=r"mask of shape \(1, 1, 2, 3\) to size \(4, 6, 8\)"):
        upsample(x, (4, 6, 8))
    with pytest.raises(ValueError, match=r"shape \(1, 1, 1, 1, 1, 1\)"):
        upsample(torch.zeros(1, 1, 1, 1, 1, 1), (2, 2, 2, 2))
    with pytest.raises(ValueError, match="'cubic'"):
        upsample(x, (4, 6), "cubic")


def test_upsample_to_keeps_axes_apart():
    coarse = np.zeros((2, 2, 3), np.float32)
    coarse[1, 0, 0] = 1.0  # high x, low y, low z
    fine = upsample_to(coarse, (4, 4, 6))
    assert fine.shape == (4, 4, 6) and fine.dtype == np.float32
    peak = np.unravel_index(np.argmax(fine), fine.shape)
    assert peak[0] >= 2 and peak[1] < 2 and peak[2] < 3
    same = np.random.default_rng(1).random(SHAPE)
    assert np.array_equal(upsample_to(same, SHAPE), same.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(9, 8, 7\) is larger than the target grid \(7, 8, 9\)"):
        upsample_to(np.zeros((9, 8, 7)), SHAPE)


def test_resample_identity_and_integer_shifts_along_each_axis():
    data = np.random.default_rng(2).random(SHAPE).astype(np.float32)
    out, coverage = resample(data, np.eye(4), np.eye(4), SHAPE)
    assert np.array_equal(out, data) and coverage == 1.0
    for axis, shift in enumerate((1, 2, 3)):
        dst = np.eye(4)
        dst[axis, 3] = shift  # target voxel 0 sits on source voxel `shift` of this axis
        out, coverage = resample(data, np.eye(4), dst, SHAPE)
        kept = [slice(None)] * 3
        kept[axis] = slice(0, SHAPE[axis] - shift)
        src = [slice(None)] * 3
        src[axis] = slice(shift, None)
        np.testing.assert_array_equal(out[tuple(kept)], data[tuple(src)])
        outside = [slice(None)] * 3
        outside[axis] = slice(SHAPE[axis] - shift, None)
        assert (out[tuple(outside)] == 0).all()
        assert coverage == pytest.approx((SHAPE[axis] - shift) / SHAPE[axis])


def test_resample_follows_the_affines_not_the_array_order():
    """An LPS copy of an RAS volume (first two axes flipped) lands back on the RAS grid exactly."""
    data = np.random.default_rng(3).random(SHAPE).astype(np.float32)
    ras = np.diag([2.0, 3.0, 4.0, 1.0])
    lps = ras.copy()
    lps[0, 0], lps[1, 1] = -2.0, -3.0
    lps[0, 3], lps[1, 3] = 2.0 * (SHAPE[0] - 1), 3.0 * (SHAPE[1] - 1)
    out, coverage = resample(data[::-1, ::-1].copy(), lps, ras, SHAPE)
    assert np.array_equal(out, data) and coverage == 1.0


def test_resample_field_of_view_is_half_a_voxel_beyond_the_edge_voxels():
    data = np.ones(SHAPE, np.float32)
    for offset, inside in ((-0.5, True), (-0.51, False)):
        dst = np.eye(4)
        dst[2, 3] = offset
        out, _ = resample(data, np.eye(4), dst, SHAPE)
        assert bool(out[0, 0, 0] == 1.0) is inside and (out[:, :, 1:] == 1).all()
    dst = np.eye(4)
    dst[2, 3] = 0.5
    out, _ = resample(data, np.eye(4), dst, SHAPE)
    assert out[0, 0, -1] == 1.0  # source coordinate 8.5 = 9 - 0.5: still inside


def test_resample_linear_is_exact_on_a_linear_field_and_nearest_keeps_labels():
    i, j, k = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in SHAPE], indexing="ij")
    field = (1.0 + 0.5 * i - 0.25 * j + 0.125 * k).astype(np.float32)
    dst = np.eye(4)
    dst[:3, :3] = np.diag([0.5, 0.75, 0.6])
    dst[:3, 3] = (0.3, 0.2, 0.1)
    shape = (11, 9, 13)
    out, coverage = resample(field, np.eye(4), dst, shape)
    ii, jj, kk = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    x, y, z = 0.5 * ii + 0.3, 0.75 * jj + 0.2, 0.6 * kk + 0.1
    np.testing.assert_allclose(out, 1.0 + 0.5 * x - 0.25 * y + 0.125 * z, rtol=1e-6)
    assert coverage == 1.0
    labels = np.random.default_rng(4).integers(0, 5, SHAPE).astype(np.float32)
    out, _ = resample(labels, np.eye(4), dst, shape, order=0)
    assert set(np.unique(out)) <= set(np.unique(labels))


def test_resample_in_two_dimensions_and_its_errors():
    data = np.arange(8 * 9, dtype=np.float32).reshape(8, 9)
    dst = np.eye(3)
    dst[1, 2] = 1.0
    out, coverage = resample(data, np.eye(3), dst, (8, 9))
    np.testing.assert_array_equal(out[:, :8], data[:, 1:])
    assert coverage == pytest.approx(8 / 9)
    with pytest.raises(ValueError, match="3 x 3 affines"):
        resample(data, np.eye(4), np.eye(4), (8, 9))
    with pytest.raises(ValueError, match="order"):
        resample(data, np.eye(3), np.eye(3), (8, 9), order=3)
