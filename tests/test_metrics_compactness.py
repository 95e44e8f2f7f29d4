"""Compactness scores on hand-made maps whose answers are known (non-cubic grids, physical spacings)."""
import numpy as np
import pytest
import torch

from captum_smocam import metrics as M

SHAPE = (7, 8, 9)


def test_peak_distance_is_zero_inside_and_the_euclidean_distance_in_mm_outside():
    m = np.zeros(SHAPE, bool)
    m[1:3, 2:4, 2:4] = True
    a = np.zeros(SHAPE)
    a[2, 3, 3] = 1.0
    assert M.peak_distance_mm(a, m) == 0.0
    a[:] = 0.0
    a[6, 3, 8] = 1.0  # 4 voxels from x = 2 and 5 from z = 3: sqrt(16 + 25) at 1 mm
    assert M.peak_distance_mm(a, m) == pytest.approx(np.sqrt(41))
    assert M.peak_distance_mm(a, m, spacing=(3.0, 2.0, 1.5)) == pytest.approx(np.hypot(12.0, 7.5))
    assert M.peak_distance_mm(torch.from_numpy(a)[None, None], m, spacing=2.0) == pytest.approx(2 * np.sqrt(41))


def test_peak_distance_takes_the_farthest_of_tied_maxima_and_agrees_with_the_pointing_game():
    m = np.zeros(SHAPE, bool)
    m[0, 0, 0] = True
    a = np.zeros(SHAPE)
    a[0, 0, 1] = a[0, 0, 8] = 2.0  # two maxima, 1 mm and 8 mm away
    assert M.peak_distance_mm(a, m) == 8.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.random(SHAPE)
        spacing = tuple(rng.uniform(0.5, 3.0, 3))
        d = M.peak_distance_mm(a, m, spacing)
        for r in (d - 1e-6, d + 1e-6, 6.0):
            assert M.pointing_game(a, m, margin_mm=max(r, 0.0), spacing=spacing) == (d <= max(r, 0.0) + 1e-9)


def test_n_components_counts_blobs_above_half_the_maximum_with_26_connectivity():
    a = np.zeros(SHAPE)
    a[1, 1, 1] = 1.0
    a[2, 2, 2] = 0.9  # touches (1, 1, 1) by a corner only
    a[5, 6, 7] = 0.6
    a[5, 6, 8] = 0.7  # face neighbour of (5, 6, 7)
    a[3, 5, 1] = 0.5  # exactly half the maximum: not above it
    a[0, 7, 8] = 0.4
    assert M.n_components(a) == 2
    assert M.n_components(a, connectivity=1) == 3  # faces only: the corner splits the first blob
    assert M.n_components(a, connectivity=2) == 3  # faces and edges: still split (a corner)
    assert M.n_components(a, fraction=0.45) == 3  # 0.5 joins
    assert M.n_components(a, fraction=0.0) == 4  # every positive voxel
    assert M.n_components(np.zeros(SHAPE)) == 0 and M.n_components(-np.ones(SHAPE)) == 0
    assert M.n_components(np.ones(SHAPE)) == 1


def test_n_components_in_two_dimensions_uses_8_connectivity():
    a = np.zeros((5, 6))
    a[0, 0] = a[1, 1] = 1.0
    assert M.n_components(a) == 1 and M.n_components(a, connectivity=1) == 2


def test_compactness_errors():
    m = np.zeros(SHAPE, bool)
    with pytest.raises(ValueError, match="empty"):
        M.peak_distance_mm(np.zeros(SHAPE), m)
    with pytest.raises(ValueError, match="fraction.*1.0"):
        M.n_components(np.zeros(SHAPE), fraction=1.0)
    with pytest.raises(ValueError, match=r"connectivity.*\[1, 3\].*4"):
        M.n_components(np.zeros(SHAPE), connectivity=4)
    with pytest.raises(ValueError, match="non-finite"):
        M.n_components(np.full(SHAPE, np.nan))
