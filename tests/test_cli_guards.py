"""The command line never leaves stale results looking current, and refuses absurd numbers and empty paths."""
import json
import os

import pytest

from captum_smocam import cohort, cohort_scan
from captum_smocam.cli import main
from captum_smocam.models import VGG3D
from captum_smocam.synth import write_cohort
from _study import make_tiny_study  # noqa: E402

SPACING = 12.0  # a 14 x 17 x 15 grid: tiny and non-cubic
TARGETS = "left_hippocampus,right_hippocampus"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One synthetic subject and a tiny random VGG3D on their grid."""
    root = tmp_path_factory.mktemp("guards")
    make_tiny_study(root, 1, SPACING)
    return root


def _cohort(root, out, **kw):
    return cohort.run_cohort(str(root / "data" / "sub-*_T1w.nii.gz"), str(root / "tiny.pt"), TARGETS, out=out,
                             n_steps=2, show_progress=False, **kw)


def test_a_cohort_rerun_leaves_no_stale_cohort_file(study, tmp_path, monkeypatch):
    """Before: a rerun without --labels kept the old cohort_regions.csv and cohort_summary.png, and a rerun in
    which every scan failed kept the old cohort_predictions.csv."""
    out = tmp_path / "out"
    res = _cohort(study, out, labels=str(study / "data" / "sub-*_labels.nii.gz"))
    assert {"cohort_regions.csv", "cohort_summary.png", "cohort_predictions.csv"} <= set(os.listdir(out))
    assert res["n_done"] == 1
    res = _cohort(study, out, force=True)  # no --labels
    assert res["n_done"] == 1 and "cohort_predictions.csv" in os.listdir(out)
    assert not {"cohort_regions.csv", "cohort_summary.png"} & set(os.listdir(out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["cohort_files"].values()) == {"cohort_predictions.csv"}

    def fail(*args, **kwargs):
        raise ValueError("this scan cannot be read")

    monkeypatch.setattr(cohort_scan, "process_scan", fail)
    res = _cohort(study, out, force=True)
    assert res["n_failed"] == 1 and "cohort_predictions.csv" not in os.listdir(out)


def _explain(study, out, *extra):
    scan = study / "data" / "sub-0000_T1w.nii.gz"
    return main(["explain", "--image", str(scan), "--model", str(study / "tiny.pt"), "--out", str(out),
                 "--no-progress", *extra])


def test_explain_reruns_with_other_settings_replace_the_whole_set(study, tmp_path):
    """Before: a run with another objective merged into the set of the first, whose manifest had no settings."""
    out = tmp_path / "out"
    assert _explain(study, out, "--target", "left_hippocampus", "--n-steps", "2") == 0
    assert _explain(study, out, "--target", "right_hippocampus", "--n-steps", "2") == 0  # same settings: merged
    files = set(os.listdir(out))
    assert {"sub-0000_T1w_smocam_left_hippocampus.nii.gz", "sub-0000_T1w_smocam_right_hippocampus.nii.gz"} <= files
    manifest = json.loads((out / "sub-0000_T1w_outputs.json").read_text())
    assert manifest["settings"]["smocam"]["n_steps"] == 2 and manifest["settings"]["layer"] == "features.block2"
    assert _explain(study, out, "--target", "right_hippocampus", "--n-steps", "3", "--objective", "poster") == 0
    manifest = json.loads((out / "sub-0000_T1w_outputs.json").read_text())
    assert manifest["settings"]["smocam"]["objective"] == "poster"
    visible = {f for f in os.listdir(out) if not f.startswith(".")}
    assert visible == set(manifest["files"]) | {"sub-0000_T1w_outputs.json"}
    assert "sub-0000_T1w_smocam_left_hippocampus.nii.gz" not in visible  # the first run's map is gone


@pytest.mark.parametrize("argv,flag,allowed", [
    (["explain", "--image", "x.nii.gz", "--target", "0", "--n-steps", "99999999999999999999"], "--n-steps",
     "[1, 1000000]"),
    (["cohort", "--images", "x.nii.gz", "--internal-batch-size", "99999999999999999999"], "--internal-batch-size",
     "[1, 1000000]"),
    (["synth", "--n", "99999999999999999999", "--out", "s"], "--n", "[1, 100000]"),
    (["synth", "--n", "2", "--seed", "99999999999999999999", "--out", "s"], "--seed", "[0, "),
    (["synth", "--n", "2", "--spacing", "inf", "--out", "s"], "--spacing", "finite"),
])
def test_absurd_numbers_are_a_one_line_error(tmp_path, monkeypatch, capsys, argv, flag, allowed):
    """Before: OverflowError tracebacks."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and allowed in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv,flag", [
    (["explain", "--image", "{scan}", "--model", "{model}", "--target", "0", "--n-steps", "2", "--out", ""], "--out"),
    (["cohort", "--images", "", "--model", "{model}", "--n-steps", "2", "--out", "c"], "--images"),
    (["synth", "--n", "1", "--spacing", "12", "--out", ""], "--out"),
])
def test_empty_paths_are_a_one_line_error(study, tmp_path, monkeypatch, capsys, argv, flag):
    """Before: --out "" wrote into the current folder; --images "" read "." as a scan."""
    monkeypatch.chdir(tmp_path)
    argv = [a.format(scan=study / "data" / "sub-0000_T1w.nii.gz", model=study / "tiny.pt") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and "empty" in err
    assert os.listdir(tmp_path) == []


def test_empty_paths_in_the_python_api():
    from captum_smocam._outputs import prepare_out
    from captum_smocam.cohort_inputs import find_scans

    with pytest.raises(ValueError, match="empty"):
        prepare_out("")
    with pytest.raises(ValueError, match="empty"):
        find_scans(["a.nii.gz", " "])
    with pytest.raises(ValueError, match="empty"):
        write_cohort("", 1)
