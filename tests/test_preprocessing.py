"""captum_smocam.preprocessing: the one intensity normalisation of training, benchmarks and NIfTI loading."""
import numpy as np
import pytest
import torch

from captum_smocam.preprocessing import NORMALIZATION_METHODS, canonical_normalization, normalize_intensity


@pytest.fixture
def head():
    """A 'scan': zero background around a block of positive, non-constant intensities."""
    x = np.zeros((6, 7, 8), dtype=np.float64)
    x[1:5, 2:6, 2:7] = np.random.default_rng(3).uniform(10.0, 50.0, size=(4, 4, 5))
    return x


def test_zscore_uses_the_foreground_only(head):
    y = normalize_intensity(head)
    fg = head > 0
    assert y.dtype == np.float32 and y.shape == head.shape
    np.testing.assert_allclose(y[fg].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(y[fg].std(), 1.0, rtol=1e-5)
    # The background keeps one value, -mean/sd of the foreground (not 0, and not part of the statistics).
    mean, sd = head[fg].mean(), head[fg].std()
    np.testing.assert_allclose(y[~fg], -mean / sd, rtol=1e-5)


def test_arrays_and_tensors_are_normalised_alike(head):
    """The same statistics for both input types: the population standard deviation of the foreground."""
    y_np = normalize_intensity(head)
    y_t = normalize_intensity(torch.from_numpy(head))
    assert isinstance(y_t, torch.Tensor) and y_t.dtype == torch.float32
    np.testing.assert_allclose(y_t.numpy(), y_np, rtol=1e-5, atol=1e-6)
    mask = head > 30
    np.testing.assert_allclose(normalize_intensity(torch.from_numpy(head), mask=torch.from_numpy(mask)).numpy(),
                               normalize_intensity(head, mask=mask), rtol=1e-5, atol=1e-6)


def test_a_given_mask_decides_the_statistics(head):
    mask = head > 30  # a foreground other than "above zero"
    y = normalize_intensity(head, mask=mask)
    np.testing.assert_allclose(y[mask].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(y[mask].std(), 1.0, rtol=1e-5)
    assert abs(float(y[head > 0].mean())) > 0.1  # the other foreground voxels are not centred
    with pytest.raises(ValueError, match=r"mask has shape \(6, 7\), the image has \(6, 7, 8\)"):
        normalize_intensity(head, mask=mask[..., 0])


def test_none_returns_a_float32_copy(head):
    for x in (head, torch.from_numpy(head)):
        y = normalize_intensity(x, "none")
        np.testing.assert_array_equal(np.asarray(y), head.astype(np.float32))
        y[0, 0, 0] = 99.0
        assert float(x[0, 0, 0]) == 0.0  # the input is untouched


def test_constant_foreground_is_only_centred():
    x = np.zeros((3, 4, 5))
    x[1, 1:3, 1:4] = 7.0
    y = normalize_intensity(x)
    assert np.all(y[x > 0] == 0.0) and np.all(y[x == 0] == -7.0)  # sd 0 is taken as 1: no division by zero


def test_bad_input_is_refused(head):
    with pytest.raises(ValueError, match="unknown normalisation method 'minmax'"):
        normalize_intensity(head, "minmax")
    assert NORMALIZATION_METHODS == ("zscore_by_foreground", "monai_nonzero", "none")
    with pytest.raises(ValueError, match="unknown normalisation method 'zscore'"):
        normalize_intensity(head, "zscore")
    with pytest.raises(ValueError, match="no foreground voxel"):
        normalize_intensity(np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="empty foreground mask"):
        normalize_intensity(head, mask=np.zeros(head.shape, dtype=bool))


def test_old_name_still_works_with_a_deprecation_warning_naming_the_clear_one(head):
    """"zscore_nonzero" put the background at -mean/sd, not 0: it is "zscore_by_foreground" now (issue 20)."""
    with pytest.warns(DeprecationWarning, match="zscore_by_foreground"):
        old = normalize_intensity(head, "zscore_nonzero")
    np.testing.assert_array_equal(old, normalize_intensity(head, "zscore_by_foreground"))
    np.testing.assert_array_equal(old, normalize_intensity(head))  # the default is unchanged
    assert canonical_normalization("zscore_nonzero", warn=False) == "zscore_by_foreground"


def test_monai_nonzero_keeps_zeros_at_zero(head):
    """MONAI's NormalizeIntensity(nonzero=True): only the nonzero voxels are z-scored; zeros stay 0."""
    head = head.copy()
    head[1, 2, 2] = -5.0  # a negative voxel is nonzero too
    y = normalize_intensity(head, "monai_nonzero")
    nz = head != 0
    assert np.all(y[~nz] == 0.0)
    np.testing.assert_allclose(y[nz].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(y[nz].std(), 1.0, rtol=1e-5)
    y_t = normalize_intensity(torch.from_numpy(head), "monai_nonzero")
    np.testing.assert_allclose(y_t.numpy(), y, rtol=1e-5, atol=1e-6)


def test_monai_nonzero_equals_monai():
    transforms = pytest.importorskip("monai.transforms")
    x = np.random.default_rng(0).uniform(0, 100, size=(7, 8, 9)).astype(np.float32)
    x[x < 40] = 0.0
    expected = np.asarray(transforms.NormalizeIntensity(nonzero=True)(x))
    np.testing.assert_allclose(normalize_intensity(x, "monai_nonzero"), expected, rtol=1e-5, atol=1e-5)
