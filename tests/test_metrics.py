"""Tests of captum_smocam.metrics on hand-made maps whose scores are known."""
import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from captum_smocam import metrics as M

SHAPE = (7, 8, 9)


def box_mask(shape=SHAPE):
    m = np.zeros(shape, bool)
    m[1:4, 2:6, 3:5] = True
    return m


# ---------------------------------------------------------------------------
# Localisation
# ---------------------------------------------------------------------------
def test_indicator_map_is_perfect():
    m = box_mask()
    a = m.astype(float)
    assert M.mass_inside(a, m) == 1.0
    assert M.auroc(a, m) == 1.0
    assert M.pointing_game(a, m) is True


def test_inverted_map_scores_zero():
    m = box_mask()
    a = 1.0 - m
    assert M.auroc(a, m) == 0.0
    assert M.mass_inside(a, m) == 0.0
    assert M.pointing_game(a, m) is False


def test_mass_inside_known_fraction_ignores_negative_mass():
    m = box_mask()
    a = np.zeros(SHAPE)
    a[1, 2, 3] = 3.0          # inside
    a[6, 0, 0] = 1.0          # outside
    a[6, 7, 8] = -5.0         # negative, ignored
    assert M.mass_inside(a, m) == pytest.approx(0.75)
    # Magnitude variant counts |-5| outside: 3 / 9.
    assert M.mass_inside(a, m, positive_only=False) == pytest.approx(3.0 / 9.0)
    # Uniform map: |S| / N.
    assert M.mass_inside(np.ones(SHAPE), m) == pytest.approx(m.sum() / m.size)
    # No positive mass: undefined.
    assert np.isnan(M.mass_inside(-np.ones(SHAPE), m))


def test_accepts_tensors_and_squeezes_batch_channel_axes():
    m = box_mask()
    rng = np.random.default_rng(0)
    a = rng.random(SHAPE)
    expected = M.auroc(a, m)
    t = torch.from_numpy(a)
    assert M.auroc(t[None, None], torch.from_numpy(m)) == pytest.approx(expected)
    assert M.auroc(a[None], m[None, None]) == pytest.approx(expected)
    assert M.mass_inside(t[None], m) == pytest.approx(M.mass_inside(a, m))
    assert M.spearman(t[None, None], a) == pytest.approx(1.0)


def test_shape_mismatch_names_both_shapes():
    m = box_mask()
    a = np.ones((7, 9, 8))  # swapped axes
    with pytest.raises(ValueError, match=r"\(7, 9, 8\).*\(7, 8, 9\)"):
        M.mass_inside(a, m)
    with pytest.raises(ValueError, match="shape mismatch"):
        M.auroc(np.ones((2,) + SHAPE), m)  # leading axis of size 2 is not squeezed


@pytest.mark.parametrize(
    "fn",
    [
        lambda a, m: M.mass_inside(a, m),
        lambda a, m: M.auroc(a, m),
        lambda a, m: M.pointing_game(a, m),
        lambda a, m: M.mass_inside_dilated(a, m, 1.0),
        lambda a, m: M.side_specificity(a, m, box_mask()),
        lambda a, m: M.side_specificity_density(a, m, box_mask()),
        lambda a, m: M.dilate_mask(m, 1.0),
    ],
)
def test_empty_mask_rejected(fn):
    with pytest.raises(ValueError, match="empty"):
        fn(np.ones(SHAPE), np.zeros(SHAPE, bool))


def test_bad_inputs_rejected():
    m = box_mask()
    with pytest.raises(ValueError, match=r"0 and 1.*2"):
        M.mass_inside(np.ones(SHAPE), m * 2)
    a = np.ones(SHAPE)
    a[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        M.auroc(a, m)
    with pytest.raises(TypeError, match="list"):
        M.auroc([1.0, 2.0], m)
    with pytest.raises(ValueError, match="covers all"):
        M.auroc(np.ones(SHAPE), np.ones(SHAPE, bool))
    with pytest.raises(ValueError, match="-1"):
        M.dilate_mask(m, -1.0)
    with pytest.raises(ValueError, match="2 value"):
        M.dilate_mask(m, 1.0, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        M.dilate_mask(m, 1.0, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="'first'"):
        M.pointing_game(a, m, ties="first")


def _ball_count(radius, spacing):
    """Lattice points within ``radius`` of the origin, by enumeration."""
    reach = [int(np.floor(radius / s)) for s in spacing]
    count = 0
    for offset in itertools.product(*[range(-r, r + 1) for r in reach]):
        if sum((o * s) ** 2 for o, s in zip(offset, spacing)) <= radius ** 2 + 1e-9:
            count += 1
    return count


@pytest.mark.parametrize(
    "shape, centre, radius, spacing, known",
    [
        ((11,), (5,), 2.0, 1.0, 5),
        ((11,), (5,), 2.0, 0.5, 9),
        ((9, 11), (4, 5), 2.0, 1.0, 13),           # Gauss circle N(2)
        ((9, 11), (4, 5), np.sqrt(2), 1.0, 9),      # 3x3 square, boundary at sqrt(2)
        ((7, 8, 9), (3, 4, 4), 1.0, 1.0, 7),
        ((7, 8, 9), (3, 4, 4), 2.0, 1.0, 33),
        ((7, 8, 9), (3, 4, 4), 2.0, (2.0, 1.0, 1.0), 15),
        ((7, 8, 9), (3, 4, 4), 2.0, (1.0, 2.0, 0.5), 27),
    ],
)
def test_dilation_grows_voxel_into_ball(shape, centre, radius, spacing, known):
    m = np.zeros(shape, bool)
    m[centre] = True
    grown = M.dilate_mask(m, radius, spacing=spacing)
    assert grown.shape == shape and grown.dtype == bool
    per_axis = spacing if isinstance(spacing, tuple) else (spacing,) * len(shape)
    assert _ball_count(radius, per_axis) == known  # the hand count is right
    assert int(grown.sum()) == known
    assert grown[centre]


def test_dilation_anisotropy_follows_axes():
    m = np.zeros(SHAPE, bool)
    m[3, 4, 4] = True
    grown = M.dilate_mask(m, 2.0, spacing=(2.0, 1.0, 1.0))
    # 2 mm reaches one voxel along axis 0 but two along axes 1 and 2.
    assert grown[4, 4, 4] and not grown[5, 4, 4]
    assert grown[3, 6, 4] and grown[3, 4, 6]
    # Tensor spacing, and a (1, 1, *spatial) mask with per-axis spacing.
    g2 = M.dilate_mask(torch.from_numpy(m)[None, None], 2.0, spacing=torch.tensor([2.0, 1.0, 1.0]))
    assert g2.shape == (1, 1) + SHAPE
    np.testing.assert_array_equal(g2[0, 0], grown)
    assert np.array_equal(M.dilate_mask(m, 0.0), m)


def test_mass_inside_dilated_counts_neighbours():
    m = np.zeros(SHAPE, bool)
    m[3, 4, 4] = True
    a = np.zeros(SHAPE)
    a[3, 4, 4] = 1.0
    a[3, 4, 6] = 1.0   # 2 voxels away along the last axis
    a[0, 0, 0] = 2.0   # far away
    assert M.mass_inside_dilated(a, m, 0.0) == pytest.approx(0.25)
    assert M.mass_inside_dilated(a, m, 1.0) == pytest.approx(0.25)
    assert M.mass_inside_dilated(a, m, 2.0) == pytest.approx(0.5)
    # With 2 mm voxels along the last axis the neighbour is 4 mm away.
    assert M.mass_inside_dilated(a, m, 2.0, spacing=(1.0, 1.0, 2.0)) == pytest.approx(0.25)


def test_auroc_random_map_is_chance():
    rng = np.random.default_rng(1)
    shape = (30, 40, 50)
    m = np.zeros(shape, bool)
    m[5:20, 10:30, 10:40] = True
    a = rng.normal(size=shape)
    assert M.auroc(a, m) == pytest.approx(0.5, abs=0.02)


def test_auroc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 4, size=(5, 6)).astype(float)  # many ties
    m = rng.random((5, 6)) < 0.3
    pos, neg = a[m], a[~m]
    diff = pos[:, None] - neg[None, :]
    expected = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert M.auroc(a, m) == pytest.approx(expected)
    assert M.auroc(np.zeros((5, 6)), m) == 0.5


def test_auroc_1d():
    m = np.array([0, 0, 1, 1, 0], bool)
    assert M.auroc(np.array([0.1, 0.2, 0.9, 0.3, 0.4]), m) == pytest.approx(5 / 6)  # 0.9 beats 3 negatives, 0.3 beats 2


def test_pointing_game_margin_and_ties():
    m = np.zeros(SHAPE, bool)
    m[3, 4, 4] = True
    a = np.zeros(SHAPE)
    a[3, 4, 6] = 1.0
    assert not M.pointing_game(a, m)
    assert not M.pointing_game(a, m, margin_mm=1.5)
    assert M.pointing_game(a, m, margin_mm=2.0)
    assert not M.pointing_game(a, m, margin_mm=2.0, spacing=(1, 1, 2))
    # Two tied maxima, one inside, one outside.
    tied = np.zeros(SHAPE)
    tied[3, 4, 4] = tied[0, 0, 0] = 5.0
    assert M.pointing_game(tied, m) is False
    assert M.pointing_game(tied, m, ties="any") is True
    # A constant map does not hit a structure under the default rule.
    assert not M.pointing_game(np.zeros(SHAPE), m)
    assert M.pointing_game(np.zeros(SHAPE), m, ties="any")


# ---------------------------------------------------------------------------
# Side specificity
# ---------------------------------------------------------------------------
def test_side_specificity_known_fractions():
    right = np.zeros(SHAPE, bool)
    right[1:3, 2:4, 2:4] = True
    left = np.zeros(SHAPE, bool)
    left[4:6, 2:4, 2:4] = True
    a = np.zeros(SHAPE)
    a[1, 2, 2] = 3.0
    a[4, 2, 2] = 1.0
    a[0, 7, 8] = 100.0   # outside both: ignored
    a[5, 3, 3] = -7.0    # negative: ignored
    assert M.side_specificity(a, right, left) == pytest.approx(0.75)
    assert M.side_specificity(a, left, right) == pytest.approx(0.25)
    assert M.side_specificity(right.astype(float), right, left) == 1.0
    assert M.side_specificity(np.ones(SHAPE), right, left) == pytest.approx(0.5)
    assert np.isnan(M.side_specificity(np.zeros(SHAPE), right, left))
    with pytest.raises(ValueError, match="contralateral_mask.*empty"):
        M.side_specificity(a, right, np.zeros(SHAPE))


def test_side_specificity_density_ignores_structure_size():
    t = np.zeros(SHAPE, bool)
    t[:2] = True
    c = np.zeros(SHAPE, bool)
    c[3:] = True  # twice as large as t
    a = np.ones(SHAPE)
    assert M.side_specificity_density(a, t, c) == pytest.approx(0.5)
    assert M.side_specificity(a, t, c) == pytest.approx(1 / 3)  # the mass version is biased by size
    a[:2] = 3.0
    a[6, 0, 0] = -50.0  # negative attention on the other side counts as 0, not as less than 0
    assert M.side_specificity_density(a, t, c) == pytest.approx(0.75, abs=0.01)
    assert np.isnan(M.side_specificity_density(np.zeros(SHAPE), t, c))
    with pytest.raises(ValueError, match="shape mismatch"):
        M.side_specificity_density(a, t[:-1], c)


def test_hemisphere_share_uses_world_x_of_every_voxel():
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[0, 3] = -9.0  # x = -9, -6, ..., 9 over the 7 voxels of axis 0: 0 at index 3
    a = np.zeros(SHAPE)
    a[5] = 1.0  # x = +6: right
    a[1, 0, 0] = 1.0 * 72 / 3  # x = -6: left, a third of the right mass
    assert M.hemisphere_share(a, affine, "right") == pytest.approx(0.75)
    assert M.hemisphere_share(a, affine, "left") == pytest.approx(0.25)
    a[3] = 100.0  # the midline plane counts for neither side
    assert M.hemisphere_share(a, affine, "right") == pytest.approx(0.75)
    # x along the second voxel axis (a permuted affine): the first axis no longer decides the side
    swapped = np.zeros((4, 4))
    swapped[0, 1], swapped[1, 0], swapped[2, 2], swapped[3, 3] = 3.0, 3.0, 3.0, 1.0
    swapped[0, 3] = -10.5  # x = -10.5 + 3 j: j < 4 left, j >= 4 right
    b = np.zeros(SHAPE)
    b[:, 6] = 1.0
    b[:, 1] = 0.5
    assert M.hemisphere_share(b, swapped, "right") == pytest.approx(2 / 3)
    assert np.isnan(M.hemisphere_share(np.zeros(SHAPE), affine, "left"))
    with pytest.raises(ValueError, match="'middle'"):
        M.hemisphere_share(a, affine, "middle")
    with pytest.raises(ValueError, match="4 x 4"):
        M.hemisphere_share(a, affine[:3], "left")


# ---------------------------------------------------------------------------
# Deletion / insertion
# ---------------------------------------------------------------------------
def linear_model(w):
    def f(x):
        return (x * w).flatten(1).sum(1, keepdim=True)

    return f


def exact_curves(contrib_sorted, ks, sigma=1.0):
    """Deletion/insertion of a linear model with baseline 0, by cumulative sums."""
    csum = np.concatenate([[0.0], np.cumsum(contrib_sorted)])
    total = csum[-1]
    deletion = np.abs(-csum[ks]) / sigma
    insertion = np.abs(csum[ks] - total) / sigma
    return deletion, insertion


def test_deletion_insertion_linear_model_exact_and_beats_random():
    g = torch.Generator().manual_seed(0)
    w = torch.rand((1, 1) + SHAPE, generator=g, dtype=torch.float64) + 0.1
    x = torch.rand((1, 1) + SHAPE, generator=g, dtype=torch.float64) + 0.1
    attr = (w * x)[0, 0]
    res = M.deletion_insertion(
        linear_model(w), x, attr, target=0, output_std=2.0, random_orderings=3, generator=5,
        batch_size=7,
    )
    frac = np.asarray(M.DEFAULT_FRACTIONS)
    n = int(np.prod(SHAPE))
    ks = np.floor(frac * n + 0.5).astype(int)
    np.testing.assert_array_equal(res["n_voxels"], ks)
    contrib = np.sort(attr.numpy().ravel())[::-1]
    d, i = exact_curves(contrib, ks, sigma=2.0)
    np.testing.assert_allclose(res["deletion"], d, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(res["insertion"], i, rtol=1e-9, atol=1e-9)
    assert res["deletion"][0] == 0 and res["insertion"][-1] == pytest.approx(0, abs=1e-9)
    assert res["output"] == pytest.approx(float(attr.sum()))
    assert res["baseline_output"] == 0.0
    # Exact area by the trapezoid rule.
    auc = np.sum((d[1:] + d[:-1]) * np.diff(frac)) / 2
    assert res["deletion_auc"] == pytest.approx(auc)
    # All contributions positive: the top-k by w*x has the largest sum of any k voxels.
    assert res["deletion_auc"] >= res["random_deletion_auc"]
    assert res["insertion_auc"] <= res["random_insertion_auc"]
    assert np.all(res["deletion"] >= res["random_deletion"] - 1e-12)
    assert res["random_deletion_aucs"].shape == (3,)
    assert res["random_deletion_auc"] == pytest.approx(res["random_deletion_aucs"].mean())
    # The inverted map is worse than random.
    worst = M.deletion_insertion(linear_model(w), x, -attr, target=0, output_std=2.0)
    assert worst["deletion_auc"] < res["random_deletion_auc"]
    assert worst["insertion_auc"] > res["random_insertion_auc"]


def test_deletion_insertion_baseline_target_batching_and_no_grad():
    g = torch.Generator().manual_seed(1)
    shape = (5, 6)
    w = torch.rand((1, 2) + shape, generator=g, dtype=torch.float64)
    x = torch.rand((1, 2) + shape, generator=g, dtype=torch.float64)
    grad_states = []

    def two_outputs(z):
        grad_states.append(torch.is_grad_enabled())
        lin = (z * w).flatten(1).sum(1)
        return torch.stack([lin * 0 + 7.0, lin], dim=1)

    attr = (w * x)  # 1 x 2 x 5 x 6: channels are summed
    fractions = (0.0, 0.25, 0.5, 1.0)
    res = M.deletion_insertion(two_outputs, x, attr, target=1, baseline=0.5,
                               fractions=fractions, batch_size=3)
    assert not any(grad_states)
    # Exact: deleting voxel v changes the output by sum_c w_c (0.5 - x_c).
    per_voxel = attr[0].sum(0).numpy().ravel()
    order = np.argsort(-per_voxel, kind="stable")
    delta = ((w * (0.5 - x))[0].sum(0)).numpy().ravel()[order]
    ks = np.floor(np.asarray(fractions) * per_voxel.size + 0.5).astype(int)
    csum = np.concatenate([[0.0], np.cumsum(delta)])
    np.testing.assert_allclose(res["deletion"], np.abs(csum[ks]), atol=1e-9)
    np.testing.assert_allclose(res["insertion"], np.abs(csum[-1] - csum[ks]), atol=1e-9)
    # Summed channels == passing the summed map; batch size does not matter.
    res2 = M.deletion_insertion(two_outputs, x, attr[0].sum(0), target=1, baseline=0.5,
                                fractions=fractions, batch_size=1)
    np.testing.assert_allclose(res2["deletion"], res["deletion"])
    # Target 0 is constant: flat curves.
    flat = M.deletion_insertion(two_outputs, x, attr, target=0, fractions=fractions)
    assert np.all(flat["deletion"] == 0) and flat["deletion_auc"] == 0
    # A tensor baseline (mean image) broadcast over channels.
    res3 = M.deletion_insertion(two_outputs, x, attr, target=1,
                                baseline=torch.full((1, 1) + shape, 0.5, dtype=torch.float64),
                                fractions=fractions)
    np.testing.assert_allclose(res3["deletion"], res["deletion"])


def test_deletion_ties_broken_by_flat_index():
    w = torch.arange(1.0, 11.0, dtype=torch.float64).reshape(1, 1, 10)
    x = torch.ones(1, 1, 10, dtype=torch.float64)
    res = M.deletion_insertion(linear_model(w), x, np.zeros(10), None,
                               fractions=(0.0, 0.1, 0.3, 1.0))
    # Constant map: voxels 0, 1, 2, ... are deleted in that order.
    np.testing.assert_allclose(res["deletion"], [0.0, 1.0, 6.0, 55.0])
    again = M.deletion_insertion(linear_model(w), x, np.zeros(10), None,
                                 fractions=(0.0, 0.1, 0.3, 1.0))
    np.testing.assert_array_equal(again["deletion"], res["deletion"])


def test_random_orderings_seeded():
    w = torch.rand(1, 1, 4, 5, 6, dtype=torch.float64)
    x = torch.rand(1, 1, 4, 5, 6, dtype=torch.float64)
    kw = dict(random_orderings=2, fractions=(0, 0.5, 1))
    r1 = M.deletion_insertion(linear_model(w), x, w * x, 0, generator=3, **kw)
    r2 = M.deletion_insertion(linear_model(w), x, w * x, 0,
                              generator=torch.Generator().manual_seed(3), **kw)
    r3 = M.deletion_insertion(linear_model(w), x, w * x, 0, generator=4, **kw)
    np.testing.assert_array_equal(r1["random_deletion"], r2["random_deletion"])
    assert not np.array_equal(r1["random_deletion"], r3["random_deletion"])
    r0 = M.deletion_insertion(linear_model(w), x, w * x, 0, fractions=(0, 1))
    assert r0["random_deletion"] is None and r0["random_deletion_auc"] is None


def test_deletion_insertion_validation():
    w = torch.rand(1, 1, 4, 5)
    f = linear_model(w)
    x = torch.rand(1, 1, 4, 5)
    with pytest.raises(ValueError, match=r"\(2, 1, 4, 5\)"):
        M.deletion_insertion(f, x.repeat(2, 1, 1, 1), w[0, 0], 0)
    with pytest.raises(ValueError, match=r"\(5, 4\)"):
        M.deletion_insertion(f, x, torch.rand(5, 4), 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.deletion_insertion(f, x, w[0, 0], 0, fractions=(0, 1.5))
    with pytest.raises(ValueError, match="increasing"):
        M.deletion_insertion(f, x, w[0, 0], 0, fractions=(0, 0.5, 0.5, 1))
    with pytest.raises(ValueError, match="output_std"):
        M.deletion_insertion(f, x, w[0, 0], 0, output_std=0.0)
    with pytest.raises(ValueError, match="out of range"):
        M.deletion_insertion(f, x, w[0, 0], 3)
    with pytest.raises(ValueError, match="broadcast"):
        M.deletion_insertion(f, x, w[0, 0], 0, baseline=torch.zeros(3, 3))


# ---------------------------------------------------------------------------
# Sanity: Spearman and cascading randomisation
# ---------------------------------------------------------------------------
def test_spearman_known_values():
    a = np.arange(24.0).reshape(2, 3, 4)
    assert M.spearman(a, np.exp(a)) == pytest.approx(1.0)
    assert M.spearman(a, -a) == pytest.approx(-1.0)
    assert M.spearman(a - 11.5, -(a - 11.5), abs=True) == pytest.approx(1.0)
    assert np.isnan(M.spearman(a, np.ones_like(a)))
    rng = np.random.default_rng(3)
    assert abs(M.spearman(rng.random(SHAPE), rng.random(SHAPE))) < 0.1
    b = rng.random(SHAPE)
    c = b + 0.3 * rng.random(SHAPE)
    from scipy.stats import spearmanr

    assert M.spearman(b, c) == pytest.approx(spearmanr(b.ravel(), c.ravel())[0])


class TinyConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv3d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm3d(4)
        self.conv2 = torch.nn.Conv3d(4, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv1(x)))
        h = torch.relu(self.conv2(h))
        return self.head(h.mean(dim=(2, 3, 4)))


def grad_times_input(model, inputs, target):
    x = inputs.clone().requires_grad_(True)
    model(x)[:, target].sum().backward()
    return (x.grad * x).detach()[0, 0]


def test_cascading_randomization_tiny_conv():
    torch.manual_seed(0)
    model = TinyConv().eval()
    with torch.no_grad():  # "trained" BN statistics that randomisation must reset
        model.bn.running_mean.fill_(0.3)
        model.bn.running_var.fill_(2.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand((1, 1) + SHAPE)
    rng_state = torch.get_rng_state()
    df = M.cascading_randomization(model, grad_times_input, x, 1)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["step", "layer", "spearman"]
    assert list(df["layer"]) == ["head", "conv2", "bn", "conv1"]
    assert list(df["step"]) == [1, 2, 3, 4]
    assert df["spearman"].iloc[0] < 1.0
    assert df["spearman"].between(-1, 1).all()
    # The user's model and global RNG are untouched.
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert not any(p.grad is not None for p in model.parameters())
    # Same seed: same table; another seed: another table.
    again = M.cascading_randomization(model, grad_times_input, x, 1)
    pd.testing.assert_frame_equal(df, again)
    other = M.cascading_randomization(model, grad_times_input, x, 1, seed=1)
    assert not np.allclose(df["spearman"], other["spearman"])


def test_cascading_randomization_resets_bn_stats_and_explicit_layers():
    model = TinyConv().eval()
    with torch.no_grad():
        model.bn.running_mean.fill_(0.3)
    seen = []

    def record(m, inputs, target):
        seen.append((m.bn.running_mean.clone(), m.head.weight.clone()))
        return grad_times_input(m, inputs, target)

    x = torch.rand((1, 1) + SHAPE)
    df = M.cascading_randomization(model, record, x, 0, layers=["bn", model.head], abs=False)
    assert list(df["layer"]) == ["bn", "head"]
    assert torch.all(seen[0][0] == 0.3)      # original map: learned statistics
    assert torch.all(seen[1][0] == 0.0)      # after step 1: reset
    assert torch.equal(seen[1][1], model.head.weight)   # head not yet touched
    assert not torch.equal(seen[2][1], model.head.weight)
    with pytest.raises(ValueError, match="'nope'"):
        M.cascading_randomization(model, record, x, 0, layers=["nope"])
    with pytest.raises(TypeError, match="Module"):
        M.cascading_randomization(lambda z: z, record, x, 0)


def test_cascading_randomization_without_reset_parameters():
    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = torch.nn.Parameter(torch.linspace(1.0, 2.0, 9))

        def forward(self, x):
            return x * self.gain

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = Scale()
            self.out = torch.nn.Linear(9, 1)

        def forward(self, x):
            return self.out(self.scale(x).flatten(1))

    def grad_x(m, inputs, target):
        z = inputs.clone().requires_grad_(True)
        m(z)[:, target].sum().backward()
        return z.grad.detach()

    model = Net()
    gain = model.scale.gain.detach().clone()
    df = M.cascading_randomization(model, grad_x, torch.rand(1, 9), 0, layers=["scale"])
    assert df["spearman"].iloc[0] < 0.99
    assert torch.equal(model.scale.gain.detach(), gain)


# ---------------------------------------------------------------------------
# False-positive rate and hit rate (Siegel et al. 2025)
# ---------------------------------------------------------------------------
def test_false_positive_rate_counts_voxels_outside_the_dilated_structure_above_its_99th_percentile():
    m = box_mask()  # 3 x 4 x 2 = 24 voxels
    a = np.zeros(SHAPE)
    a[m] = np.arange(1, 25)  # inside values 1..24: 99th percentile (linear) = 23.77
    outside = ~M.dilate_mask(m, 1.0)
    n_out = int(outside.sum())
    a[6, 7, 8] = 23.8  # above the percentile, far away: counted
    a[6, 0, 0] = 23.7  # below it: not counted
    a[0, 2, 3] = 100.0  # next to the structure (within 1 mm): not counted
    assert not outside[0, 2, 3] and outside[6, 7, 8] and outside[6, 0, 0]
    assert M.false_positive_rate(a, m, margin_mm=1.0) == pytest.approx(1 / n_out)
    # A lower quantile lowers the bar: 23.7 now counts too (q = 0.5 -> 12.5).
    assert M.false_positive_rate(a, m, margin_mm=1.0, quantile=0.5) == pytest.approx(2 / n_out)
    # Restricting the counted voxels to a region changes the denominator and the count.
    within = np.zeros(SHAPE, bool)
    within[5:] = True
    n_within = int((outside & within).sum())
    assert M.false_positive_rate(a, m, 1.0, within=within) == pytest.approx(1 / n_within)
    # The indicator map has no false positive; the inverted one marks every outside voxel.
    assert M.false_positive_rate(m.astype(float), m, 1.0) == 0.0
    assert M.false_positive_rate(2.0 - m, m, 1.0) == 1.0


def test_false_positive_rate_uses_physical_margins():
    m = np.zeros(SHAPE, bool)
    m[3, 4, 4] = True
    a = np.zeros(SHAPE)
    a[3, 4, 7] = 1.0  # 3 voxels away along z: 3 mm at 1 mm, 7.5 mm at 2.5 mm
    assert M.false_positive_rate(a, m, 6.0, spacing=1.0) == 0.0
    assert M.false_positive_rate(a, m, 6.0, spacing=(1.0, 1.0, 2.5)) > 0.0


def test_false_positive_rate_errors():
    m = box_mask()
    with pytest.raises(ValueError, match="quantile.*1.5"):
        M.false_positive_rate(m.astype(float), m, 1.0, quantile=1.5)
    with pytest.raises(ValueError, match="no voxel is left outside"):
        M.false_positive_rate(m.astype(float), m, 50.0)
    with pytest.raises(ValueError, match=r"\(7, 8, 9\).*\(7, 8, 8\)"):
        M.false_positive_rate(np.zeros((7, 8, 9)), np.ones((7, 8, 8), bool), 1.0)


def _three_regions():
    lab = np.zeros(SHAPE, int)
    lab[0:2, :, :4] = 5
    lab[2:5, :, :4] = 7
    lab[5:7, :, :4] = 9  # z >= 4 is background (0)
    return lab


def test_region_rank_orders_regions_by_mean_positive_attention():
    lab = _three_regions()
    a = np.zeros(SHAPE)
    a[lab == 5] = 0.2
    a[lab == 7] = 0.5
    a[lab == 9] = 0.3
    a[0, 0, 0] = -50.0  # negative evidence is dropped, as in mass_inside: region 5's mean is ~0.2
    a[:, :, 4:] = 10.0  # the background is no region, however bright
    assert [M.region_rank(a, lab, k) for k in (7, 9, 5)] == [1, 2, 3]
    assert M.region_hit(a, lab, 7) and not M.region_hit(a, lab, 9)
    assert M.region_hit(a, lab, 9, top_k=2) and M.region_hit(a, lab, 5, top_k=3)
    # One hot voxel does not make a region win: the mean counts, not the maximum.
    a[5, 0, 0] = 10.0  # region 9 (64 voxels): mean (63 x 0.3 + 10) / 64 = 0.45 < 0.5
    assert M.region_rank(a, lab, 9) == 2
    a[5, 0, 1] = 2.0  # mean (62 x 0.3 + 12) / 64 = 0.478: still second; one more bright voxel tips it
    assert M.region_rank(a, lab, 9) == 2
    a[5, 0, 2] = 2.0  # (61 x 0.3 + 14) / 64 = 0.505 > 0.5
    assert M.region_rank(a, lab, 9) == 1 and M.region_rank(a, lab, 7) == 2
    # Torch maps and a float label map with integer values are accepted.
    assert M.region_rank(torch.from_numpy(a), lab.astype(np.float32), 7) == M.region_rank(a, lab, 7)


def test_region_rank_counts_ties_against_the_structure():
    lab = _three_regions()
    assert M.region_rank(np.ones(SHAPE), lab, 7) == 3  # a constant map ranks every region last
    assert not M.region_hit(np.zeros(SHAPE), lab, 5, top_k=2)


def test_region_rank_errors():
    lab = _three_regions()
    with pytest.raises(ValueError, match="label 4 is not a region.*\\[5, 7, 9\\]"):
        M.region_rank(np.zeros(SHAPE), lab, 4)
    with pytest.raises(ValueError, match="label 0 is not a region"):
        M.region_rank(np.zeros(SHAPE), lab, 0)
    with pytest.raises(TypeError, match="integer labels"):
        M.region_rank(np.zeros(SHAPE), lab + 0.5, 5)
    with pytest.raises(ValueError, match="top_k.*0"):
        M.region_hit(np.zeros(SHAPE), lab, 5, top_k=0)
