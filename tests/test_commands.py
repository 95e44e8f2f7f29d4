"""The explain / compare / demo sub-commands on a tiny model and a synthetic scan."""
import json
import os
import time

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from captum_smocam import synth
from captum_smocam.cli import main
from captum_smocam.models import VGG3D, save_checkpoint


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    shape, affine = synth.default_grid()
    torch.manual_seed(0)
    n = len(synth.STRUCTURE_NAMES)
    model = VGG3D(n, channels=(4, 8, 8), output_mean=[5.0] * n, output_std=[1.0] * n).eval()
    ckpt = d / "tiny.pt"
    save_checkpoint(ckpt, model, {
        "output_names": list(synth.STRUCTURE_NAMES), "input_shape": list(shape),
        "affine": np.asarray(affine).tolist(), "intensity_normalization": "zscore_nonzero",
        "default_layer": "features.block2", "spacing_mm": float(synth.DEFAULT_SPACING),
    })
    subject = synth.generate_subject(20000)
    t1, labels = synth.write_subject(subject, d)
    synth.write_lut(d / "labels.txt")
    return {"dir": d, "ckpt": str(ckpt), "t1": str(t1), "labels": str(labels), "lut": str(d / "labels.txt")}


def test_explain_writes_maps_on_the_scan_grid_and_region_tables(case, tmp_path):
    out = tmp_path / "out"
    rc = main(["explain", "--image", case["t1"], "--target", "right_hippocampus,left_hippocampus",
               "--model", case["ckpt"], "--n-steps", "3", "--labels", case["labels"], "--lut", case["lut"],
               "--out", str(out), "--no-progress"])
    assert rc == 0
    files = sorted(os.listdir(out))
    assert "sub-20000_T1w_smocam_right_hippocampus.nii.gz" in files
    assert "sub-20000_T1w_smocam_left_hippocampus_regions.csv" in files
    img = nib.load(out / "sub-20000_T1w_smocam_right_hippocampus.nii.gz")
    scan = nib.load(case["t1"])
    assert img.shape == scan.shape and np.allclose(img.affine, scan.affine)
    table = pd.read_csv(out / "sub-20000_T1w_smocam_right_hippocampus_regions.csv")
    assert {"label", "name", "share"} <= set(table.columns)
    assert 0 < table["share"].sum() <= 1 + 1e-6
    preds = pd.read_csv(out / "sub-20000_T1w_predictions.csv")
    assert list(preds["structure"]) == list(synth.STRUCTURE_NAMES)
    used = json.loads((out / "sub-20000_T1w_outputs.json").read_text())["used"]
    assert used["references"].startswith("fallback: ") and "smocam" in used["methods"]
    assert not any(f.startswith(".smocam-staging") for f in files)


def test_compare_runs_every_method(case, tmp_path):
    out = tmp_path / "cmp"
    rc = main(["compare", "--image", case["t1"], "--target", "right_lateral_ventricle", "--model", case["ckpt"],
               "--methods", "smocam,gradcam,saliency,smoothgrad", "--n-steps", "3", "--labels", case["labels"],
               "--out", str(out), "--no-progress"])
    assert rc == 0
    summary = pd.read_csv(out / "methods_right_lateral_ventricle.csv")
    assert list(summary["method"]) == ["smocam", "gradcam", "saliency", "smoothgrad"]
    # which references SMOCAM used, and every method's settings, are in the table and the manifest
    assert summary["references"][0].startswith("fallback: ") and summary["references"][1:].isna().all()
    used = json.loads((out / "compare_outputs.json").read_text())["used"]
    assert used["references"] == summary["references"][0]
    assert used["methods"]["smoothgrad"]["samples"] == 50 and used["methods"]["smocam"]["n_steps"] == 3
    assert os.path.getsize(out / "comparison_right_lateral_ventricle.png") > 10_000
    assert (out / "smocam_right_lateral_ventricle_convergence.png").exists()


def test_demo_quick_on_a_given_model(case, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", case["ckpt"], "--quick", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "right_lateral_ventricle" in text and "occlusion" in text
    for name in ("comparison_right_lateral_ventricle.png", "smocam_right_lateral_ventricle.nii.gz",
                 "regions_right_lateral_ventricle.csv", "predictions.csv"):
        assert (out / name).exists(), name
    regions = pd.read_csv(out / "regions_right_lateral_ventricle.csv")
    assert set(regions["method"]) == {"smocam", "gradcam", "occlusion", "saliency", "smoothgrad", "deeplift",
                                      "integrated_gradients"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--image", "{dir}/missing.nii.gz", "--target", "0"], "not found"),
        (["--image", "{dir}/garbage.nii.gz", "--target", "0"], "cannot read"),
        (["--image", "{t1}", "--target", "amygdala"], "unknown target 'amygdala'"),
        (["--image", "{t1}", "--target", "0", "--layer", "features.block9"], "unknown layer 'features.block9'"),
        (["--image", "{shifted}", "--target", "0"], "cover"),
        (["--image", "{t1}", "--target", "0", "--method", "lime"], "unknown method 'lime'"),
        (["--image", "{t1}", "--target", "0", "--n-steps", "0"], "--n-steps"),
    ],
)
def test_explain_errors_are_one_line_and_write_nothing(case, tmp_path, capsys, argv, message):
    d = case["dir"]
    (d / "garbage.nii.gz").write_bytes(b"this is not a nifti file")
    if not (d / "shifted.nii.gz").exists():
        img = nib.load(case["t1"])
        far = img.affine.copy()
        far[:3, 3] += 500.0  # a field of view 50 cm away from the model grid
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), far), d / "shifted.nii.gz")
    argv = [a.format(dir=d, t1=case["t1"], shifted=d / "shifted.nii.gz") for a in argv]
    out = tmp_path / "never"
    rc = main(["explain", *argv, "--model", case["ckpt"], "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("smocam: error:")
    assert not out.exists() or os.listdir(out) == []


def test_failure_midway_leaves_out_untouched(case, tmp_path, monkeypatch):
    import captum_smocam.commands.explain as explain

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier result")

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(explain, "predictions_table", broken)
    rc = main(["explain", "--image", case["t1"], "--target", "0", "--model", case["ckpt"], "--n-steps", "2",
               "--out", str(out), "--no-progress"])
    assert rc == 2
    assert sorted(os.listdir(out)) == ["keep.txt"]


def test_top_regions_ranks_by_density_not_size():
    from captum_smocam.commands.scan import top_regions

    table = pd.DataFrame({
        "label": [1, 2], "name": ["big", "small"], "n_voxels": [1000, 10],
        "attention_sum": [100.0, 5.0], "attention_mean": [0.1, 0.5], "share": [0.9, 0.05],
    })
    text = top_regions(table, k=2)
    assert text.startswith("small x4.8")  # 0.5 / (105 / 1010)
    assert "big x1.0" in text


def test_bad_checkpoints_are_one_line_errors(case, tmp_path, capsys):
    """Empty, random, absurd and mislabelled checkpoints: one line that says what is wrong, exit 2, nothing written."""
    blob = torch.load(case["ckpt"], weights_only=True)
    kwargs = dict(blob["metadata"]["arch_kwargs"], channels=[200000, 200000, 8])
    torch.save({"state_dict": blob["state_dict"], "metadata": dict(blob["metadata"], arch_kwargs=kwargs)},
               tmp_path / "absurd.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    few = dict(blob["metadata"], output_names=list(synth.STRUCTURE_NAMES[:4]))
    torch.save({"state_dict": blob["state_dict"], "metadata": few}, tmp_path / "fewnames.pt")
    nameless = {k: v for k, v in blob["metadata"].items() if k != "output_names"}
    torch.save({"state_dict": blob["state_dict"], "metadata": nameless}, tmp_path / "nameless.pt")
    overflow = dict(blob["state_dict"])
    overflow["head.fc2.weight"] = torch.full_like(overflow["head.fc2.weight"], 1e38)  # predicts Inf
    torch.save({"state_dict": overflow, "metadata": blob["metadata"]}, tmp_path / "overflow.pt")
    for name, message in [("absurd.pt", "200000"), ("empty.pt", "empty (0 bytes)"),
                          ("noise.pt", "not a PyTorch checkpoint"),
                          ("fewnames.pt", "has 4 names but the model has 16 outputs"),
                          ("nameless.pt", "no metadata['output_names']"),
                          ("overflow.pt", "not finite")]:
        out = tmp_path / f"out-{name}"
        rc = main(["explain", "--image", case["t1"], "--target", "0", "--model", str(tmp_path / name),
                   "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and message in err, err
        assert len(err.strip().splitlines()) == 1 and err.startswith("smocam: error:")
        assert not out.exists() or os.listdir(out) == []


def test_explain_names_outputs_after_the_full_stem(case, tmp_path):
    """scan.v1 and scan.v2 were both cut to 'scan' and overwrote each other in silence."""
    for version in ("v1", "v2"):
        image = tmp_path / f"scan.{version}.nii.gz"
        image.write_bytes(open(case["t1"], "rb").read())
        assert main(["explain", "--image", str(image), "--target", "right_hippocampus", "--model", case["ckpt"],
                     "--n-steps", "2", "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    files = set(os.listdir(tmp_path / "out"))
    for version in ("v1", "v2"):
        assert {f"scan.{version}_predictions.csv", f"scan.{version}_smocam_right_hippocampus.nii.gz"} <= files


def test_explain_output_names_from_a_checkpoint_stay_inside_out(case, tmp_path):
    blob = torch.load(case["ckpt"], weights_only=True)
    names = list(blob["metadata"]["output_names"])
    names[0] = "../../../../escaped"
    torch.save({"state_dict": blob["state_dict"], "metadata": dict(blob["metadata"], output_names=names)},
               tmp_path / "hostile.pt")
    out = tmp_path / "a" / "b" / "out"
    assert main(["explain", "--image", case["t1"], "--target", "0", "--model", str(tmp_path / "hostile.pt"),
                 "--n-steps", "2", "--out", str(out), "--no-progress"]) == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "hostile.pt"]
    assert written and all(out in p.parents for p in written)
    assert not any("escaped" in p.name and out != p.parent for p in written)


def _explain(case, image, out, *extra):
    return main(["explain", "--image", str(image), "--target", "right_hippocampus", "--model", case["ckpt"],
                 "--n-steps", "2", "--out", str(out), "--no-progress", *extra])


def test_explain_never_overwrites_another_inputs_outputs_silently(case, tmp_path, capsys):
    for folder in ("site1", "site2"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "scan.nii.gz").write_bytes(open(case["t1"], "rb").read())
    out = tmp_path / "out"
    assert _explain(case, tmp_path / "site1" / "scan.nii.gz", out) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    # Same stem, another file: refused before any work, in one line, and the first outputs stay.
    assert _explain(case, tmp_path / "site2" / "scan.nii.gz", out) == 2
    err = capsys.readouterr().err
    assert "site1" in err and "site2" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == first
    # The same input again: fine (a rerun); --force replaces the other input's set.
    assert _explain(case, tmp_path / "site1" / "scan.nii.gz", out) == 0
    assert _explain(case, tmp_path / "site2" / "scan.nii.gz", out, "--force") == 0
    manifest = json.loads((out / "scan_outputs.json").read_text())
    assert manifest["source"] == str(tmp_path / "site2" / "scan.nii.gz")
    # A file that no smocam run wrote is not overwritten either.
    (out / "scan.v1_predictions.csv").write_text("my own table")
    image = tmp_path / "scan.v1.nii.gz"
    image.write_bytes(open(case["t1"], "rb").read())
    assert _explain(case, image, out) == 2
    assert "scan.v1_predictions.csv" in capsys.readouterr().err
    assert (out / "scan.v1_predictions.csv").read_text() == "my own table"


def test_explain_publishes_all_or_nothing_and_cleans_stale_staging(case, tmp_path, monkeypatch):
    import captum_smocam._outputs as outputs

    out = tmp_path / "out"
    assert _explain(case, case["t1"], out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    # An earlier run killed while staging (an older version's folder: no owner file, an hour old).
    stale = out / ".smocam-staging-a1b2c3d4"
    stale.mkdir()
    (stale / "sub-20000_T1w_smocam_right_hippocampus.nii.gz").write_bytes(b"half")
    os.utime(stale, (time.time() - 3600,) * 2)
    # The publication fails at its third move: nothing of the new set may stay beside the old one.
    real, calls = os.replace, []

    def failing(src, dst):
        if not os.path.basename(src).startswith("."):
            calls.append(src)
            if len(calls) == 3:
                raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", failing)
    assert _explain(case, case["t1"], out, "--n-steps", "3") == 2
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not stale.exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".smocam-locks"]


def test_unusable_out_fails_before_the_work(case, capsys, monkeypatch):
    import captum_smocam.pipeline as pipeline

    monkeypatch.setattr(pipeline, "attribute_map", lambda *a, **k: pytest.fail("computed before checking --out"))
    assert main(["explain", "--image", case["t1"], "--target", "0", "--model", case["ckpt"], "--out", "/proc/x",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot create the output folder '/proc/x'" in err and len(err.strip().splitlines()) == 1


def test_label_map_errors_say_what_is_wrong(case, tmp_path, capsys):
    """One rule for explain and cohort: labels on the scan's grid, overlapping the model grid."""
    img = nib.load(case["labels"])
    moved = img.affine.copy()
    moved[:3, 3] += 6.0  # same shape, grid shifted by 6 mm
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), moved), tmp_path / "shifted_labels.nii.gz")
    far = img.affine.copy()
    far[:3, 3] += 1000.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), far), tmp_path / "far_labels.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.int16), img.affine), tmp_path / "empty_labels.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-2], img.affine), tmp_path / "small_labels.nii.gz")
    cases = [
        ("shifted_labels.nii.gz", "has the scan's shape (56, 68, 60) but another affine"),
        ("far_labels.nii.gz", "does not overlap the scan"),
        ("empty_labels.nii.gz", "has no labelled voxel"),
        ("small_labels.nii.gz", "has shape (54, 68, 60), the scan has (56, 68, 60)"),
        ("missing_labels.nii.gz", "label map not found"),
    ]
    for name, message in cases:
        rc = main(["explain", "--image", case["t1"], "--target", "0", "--model", case["ckpt"], "--labels",
                   str(tmp_path / name), "--out", str(tmp_path / "out"), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and message in err, (name, err)
        assert "scan file not found" not in err and len(err.strip().splitlines()) == 1


def test_nan_voxels_warn_and_a_constant_scan_is_refused(case, tmp_path, capsys):
    img = nib.load(case["t1"])
    data = np.asarray(img.dataobj, dtype=np.float32).copy()
    data[:5] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), tmp_path / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.ones(img.shape, np.float32), img.affine), tmp_path / "flat.nii.gz")
    rc = main(["explain", "--image", str(tmp_path / "nan.nii.gz"), "--target", "0", "--model", case["ckpt"],
               "--n-steps", "2", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0 and "smocam: warning:" in err and "20400 NaN/Inf voxel(s)" in err and "set to 0" in err
    rc = main(["explain", "--image", str(tmp_path / "flat.nii.gz"), "--target", "0", "--model", case["ckpt"],
               "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "constant" in err and len(err.strip().splitlines()) == 1


def test_objective_and_steps_reach_smocam_and_nothing_else_does(case, tmp_path, monkeypatch):
    import captum_smocam.pipeline as pipeline

    seen = []

    def record(method, model, x, target, *, smocam_kwargs=None, **kwargs):
        seen.append(dict(smocam_kwargs))
        return torch.zeros(len(target), 1, *x.shape[2:])

    monkeypatch.setattr(pipeline, "attribute_map", record)
    assert _explain(case, case["t1"], tmp_path / "a", "--objective", "poster") == 0
    assert seen[-1] == {"objective": "poster", "n_steps": 2}  # no l2_weight, lr, ...: the objective's defaults
    assert main(["explain", "--image", case["t1"], "--target", "0", "--model", case["ckpt"],
                 "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert seen[-1] == {"objective": "preserve"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is missing")
def test_device_cuda_without_cuda_is_a_one_line_error(case, tmp_path, capsys):
    out = tmp_path / "out"
    for argv in (["explain", "--image", case["t1"], "--target", "0"], ["demo"]):
        rc = main([*argv, "--model", case["ckpt"], "--device", "cuda", "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and "torch.cuda.is_available() is False" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
