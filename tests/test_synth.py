"""Tests of the synthetic cohort: determinism, exact volumes, grid, CLI."""
import math
import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from captum_smocam import synth
from captum_smocam.cli import main
from captum_smocam.synth.deformation import (_SCALE_CENTRE, _cells, _det3, _displacement, _exact_volumes, _grid_cache,
                                             _local_jacobian, _warp)
from captum_smocam.synth.subjects import _draw

SMALL = 12.0  # mm: a 14 x 17 x 15 grid, cheap and non-cubic


def test_names_and_labels_contract():
    assert len(synth.STRUCTURE_NAMES) == 16
    assert set(synth.LABELS.values()) == set(synth.STRUCTURE_NAMES)
    assert 0 not in synth.LABELS
    for name in synth.STRUCTURE_NAMES:
        side, base = name.split("_", 1)
        assert side in ("left", "right") and name == name.lower()
        other = ("right_" if side == "left" else "left_") + base
        assert other in synth.STRUCTURE_NAMES


def test_template_volumes_plausible():
    v = synth.template_volumes()
    for side in ("left", "right"):
        assert 3.0 <= v[f"{side}_hippocampus"] <= 5.0
        assert 5.0 <= v[f"{side}_lateral_ventricle"] <= 15.0
        assert 300 <= v[f"{side}_cerebral_grey_matter"] <= 600
    # The template is symmetric: left and right labels have the same size.
    assert v["left_thalamus"] == pytest.approx(v["right_thalamus"], rel=0.02)


def test_grid_shape_and_affine():
    shape, affine = synth.default_grid()
    assert shape == (56, 68, 60) and max(shape) <= 96
    assert np.allclose(np.diag(affine)[:3], 3.0)
    shape, affine = synth.default_grid(2.5)
    assert max(shape) <= 96
    with pytest.raises(ValueError, match="spacing"):
        synth.default_grid(-1.0)


def _voxel(affine, mni):
    return tuple(int(round(c)) for c in nib.affines.apply_affine(np.linalg.inv(affine), mni))


def test_affine_maps_known_mni_points_to_the_right_labels():
    t = synth.template()
    lab = {v: k for k, v in synth.LABELS.items()}
    # Hippocampus, thalamus and ventricle body, left (x < 0) and right.
    for mni, base in [((28, -22, -14), "hippocampus"), ((11, -20, 7), "thalamus"), ((20, -38, 17), "lateral_ventricle")]:
        right = _voxel(t.affine, mni)
        left = _voxel(t.affine, (-mni[0], mni[1], mni[2]))
        assert t.labels[right] == lab[f"right_{base}"], (mni, t.labels[right])
        assert t.labels[left] == lab[f"left_{base}"]
    # Background far outside the brain.
    assert t.image[0, 0, 0] == 0 and t.labels[0, 0, 0] == 0


def test_template_subject_has_template_volumes():
    t = synth.template(SMALL)
    assert t.image.shape == synth.default_grid(SMALL)[0] == (14, 17, 15)
    assert t.volumes == synth.template_volumes()


def test_identity_and_pure_scale_volumes():
    cells = _cells()
    zero = np.zeros(len(synth.STRUCTURE_NAMES))
    det = _local_jacobian(cells, zero, None)
    assert np.allclose(det, 1.0)
    v0 = synth.template_volumes()
    ident = _exact_volumes(1.0, det)
    for name in synth.STRUCTURE_NAMES:
        assert ident[name] == pytest.approx(v0[name], rel=1e-6)
    s = 1.07
    scaled = _exact_volumes(s, det)
    for name in synth.STRUCTURE_NAMES:
        assert scaled[name] == pytest.approx(v0[name] * s**3, rel=0.01)
    # The inverse map of a pure scale is the exact inverse scaling.
    shape, affine = synth.default_grid(SMALL)
    pos = _warp(SMALL, s, zero, None)
    cache = _grid_cache(SMALL)
    grid = cache.points[cache.active].T.astype(np.float64)
    centre = _SCALE_CENTRE[:, None]
    assert np.allclose(centre + s * (pos - centre), grid, atol=1e-4)


def test_determinism():
    a = synth.generate_subject(3, spacing=SMALL)
    b = synth.generate_subject(3, spacing=SMALL)
    c = synth.generate_subject(4, spacing=SMALL)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert a.volumes == b.volumes
    assert not np.array_equal(a.image, c.image)
    assert a.volumes != c.volumes
    d = synth.generate_subject(3, spacing=SMALL, cohort_seed=1)
    assert d.volumes != a.volumes
    assert a.image.dtype == np.float32 and a.labels.dtype == np.int16
    assert a.image.min() >= 0


def _subject_warp(index, spacing):
    sub = synth.generate_subject(index, spacing=spacing)
    p = sub.params
    waves = _draw(np.random.default_rng([0, index]), synth.DEFAULT_LR_CORRELATION)["waves"]
    amps = np.array([p["amplitudes"][n] for n in synth.STRUCTURE_NAMES])
    return sub, amps, waves, _warp(spacing, p["scale"], amps, waves)


def test_jacobian_positive_and_warp_invertible():
    for i in range(2):
        s = synth.generate_subject(i, spacing=SMALL)
        assert 0 < s.params["min_jacobian"] < 1.5
    # Independent check on the actual warp: finite-difference Jacobian of the
    # inverse map on the grid is positive wherever it is defined.
    sub, amps, waves, pos = _subject_warp(1, 3.0)
    cache = _grid_cache(3.0)
    full = np.full((3, cache.points.shape[0]), np.nan)
    full[:, cache.active] = pos
    f = full.reshape((3,) + cache.shape)
    J = np.stack([np.stack(np.gradient(f[i], 3.0), 0) for i in range(3)])
    det = _det3(J)
    assert np.isfinite(det).sum() > 50000
    assert np.nanmin(det) > 0
    # phi(phi^-1(y)) = y: the forward map, evaluated directly, undoes the warp.
    s = sub.params["scale"]
    c = _SCALE_CENTRE[:, None]
    y = c + s * (pos - c + _displacement(pos.T, amps, waves))
    assert np.abs(y - cache.points[cache.active].T).max() < 0.3  # mm, vs 3 mm voxels


def test_volume_changes_follow_draws_and_overrides():
    base = synth.template_volumes()
    sub = synth.generate_subject(
        5, spacing=SMALL, overrides={"left_hippocampus": 0.7, "right_hippocampus": 1.3}
    )
    s3 = sub.params["scale"] ** 3
    assert sub.volumes["left_hippocampus"] / (base["left_hippocampus"] * s3) == pytest.approx(0.7, rel=0.02)
    assert sub.volumes["right_hippocampus"] / (base["right_hippocampus"] * s3) == pytest.approx(1.3, rel=0.02)
    # +-25 % is reachable for every structure.
    for name in ("left_lateral_ventricle", "right_putamen", "left_cerebral_white_matter", "right_cerebellum"):
        for f in (0.75, 1.25):
            v = synth.generate_subject(0, spacing=SMALL, overrides={name: f})
            ratio = v.volumes[name] / (base[name] * v.params["scale"] ** 3)
            assert ratio == pytest.approx(f, rel=0.03), (name, f, ratio)
            assert v.params["min_jacobian"] > 0
    with pytest.raises(ValueError, match="left_hipocampus"):
        synth.generate_subject(0, spacing=SMALL, overrides={"left_hipocampus": 0.8})
    with pytest.raises(ValueError, match="5.0"):
        synth.generate_subject(0, spacing=SMALL, overrides={"left_hippocampus": 5.0})


def test_lr_correlation_changes_pair_correlation():
    def corr(r):
        z = [_draw(np.random.default_rng([0, i]), r)["log_factors"] for i in range(40)]
        left = [d["left_hippocampus"] for d in z] + [d["left_thalamus"] for d in z]
        right = [d["right_hippocampus"] for d in z] + [d["right_thalamus"] for d in z]
        return np.corrcoef(left, right)[0, 1]

    assert corr(0.95) > 0.85
    assert abs(corr(0.0)) < 0.35
    with pytest.raises(ValueError, match="1.5"):
        synth.generate_subject(0, spacing=SMALL, lr_correlation=1.5)


def test_labels_match_exact_volumes():
    sub = synth.generate_subject(2)  # default 3 mm grid
    voxel = 27.0 / 1000.0
    total_lab = total_exact = 0.0
    for value, name in synth.LABELS.items():
        mask = sub.labels == value
        counted = mask.sum() * voxel
        exact = sub.volumes[name]
        # Nearest-neighbour sampling misassigns at most the boundary voxels;
        # half of them is a generous bound for the (signed, cancelling) error.
        inner = np.zeros_like(mask)
        inner[1:-1, 1:-1, 1:-1] = mask[1:-1, 1:-1, 1:-1]
        for ax in range(3):
            for sh in (-1, 1):
                inner &= np.roll(mask, sh, axis=ax)
        boundary = (mask & ~inner).sum() * voxel
        assert abs(counted - exact) <= 0.5 * boundary, (name, counted, exact, boundary)
        total_lab += counted
        total_exact += exact
    assert total_lab == pytest.approx(total_exact, rel=0.02)


def test_cli_writes_readable_cohort(tmp_path):
    out = tmp_path / "cohort"
    rc = main(["synth", "--n", "2", "--out", str(out), "--seed", "3", "--spacing", "12", "--lr-correlation", "0"])
    assert rc == 0
    img = nib.load(out / "sub-0001_T1w.nii.gz")
    lab = nib.load(out / "sub-0001_labels.nii.gz")
    assert img.shape == (14, 17, 15) and lab.shape == img.shape
    assert np.allclose(img.affine, synth.default_grid(12.0)[1])
    direct = synth.generate_subject(1, spacing=12.0, cohort_seed=3, lr_correlation=0.0)
    assert np.allclose(np.asarray(img.dataobj), direct.image)
    df = pd.read_csv(out / "volumes.csv")
    assert list(df.columns) == ["subject", *synth.STRUCTURE_NAMES]
    assert list(df["subject"]) == ["sub-0000", "sub-0001"]
    assert df.loc[1, "left_hippocampus"] == pytest.approx(direct.volumes["left_hippocampus"], rel=1e-5)
    lut = [l.split() for l in (out / "labels.txt").read_text().splitlines() if not l.startswith("#")]
    assert all(len(row) == 6 for row in lut)
    assert {int(r[0]): r[1] for r in lut if r[0] != "0"} == synth.LABELS
    assert not [p for p in os.listdir(out) if ".part" in p]


@pytest.mark.parametrize(
    "args", [["--n", "0"], ["--n", "2", "--lr-correlation", "1.5"], ["--n", "2", "--lr-correlation", "-2"]]
)
def test_cli_rejects_bad_values(tmp_path, args, capsys):
    out = tmp_path / "bad"
    rc = main(["synth", "--out", str(out), *args])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("smocam: error:")
    assert not out.exists() or not os.listdir(out)
