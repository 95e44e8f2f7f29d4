"""`smocam cohort`: per-scan outputs, resumption, bad scans, label pairing and torchrun sharding."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from captum_smocam import cohort, cohort_scan
from captum_smocam.cli import main
from captum_smocam.models import VGG3D
from captum_smocam.nifti import load_scan
from captum_smocam.pipeline import load_model
from captum_smocam.synth import STRUCTURE_NAMES
from _study import make_tiny_study  # noqa: E402

SPACING = 12.0  # 14 x 17 x 15 grid: tiny and non-cubic
TARGETS = ["left_hippocampus", "right_hippocampus", "left_thalamus"]
N_STEPS = 4


@pytest.fixture(scope="session")
def _cohort_src(tmp_path_factory):
    """Three synthetic subjects and a tiny random VGG3D on their grid, made once per session."""
    root = tmp_path_factory.mktemp("cohort_src")
    make_tiny_study(root, 3, SPACING)
    return root


@pytest.fixture()
def study(_cohort_src, tmp_path):
    """A private copy of the data (tests corrupt files) and the checkpoint path."""
    shutil.copytree(_cohort_src / "data", tmp_path / "data")
    return tmp_path, str(_cohort_src / "tiny.pt")


def _run(root, ckpt, out="out", **kw):
    kw.setdefault("n_steps", N_STEPS)
    return cohort.run_cohort(str(root / "data" / "sub-*_T1w.nii.gz"), ckpt, ",".join(TARGETS),
                             labels=str(root / "data" / "sub-*_labels.nii.gz"), out=root / out,
                             show_progress=False, **kw)


def _mtimes(folder: Path):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} if folder.exists() else {}


def _visible(folder: Path):
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_outputs_resume_after_crash(study, monkeypatch):
    root, ckpt = study
    out = root / "out"

    # Crash of scan 2 after its maps were written, before its region table and done-marker.
    real = cohort_scan.region_tables

    def crash_on_second(maps, info, *args, **kwargs):
        if "sub-0001" in str(info.source):
            raise RuntimeError("simulated crash")
        return real(maps, info, *args, **kwargs)

    monkeypatch.setattr(cohort_scan, "region_tables", crash_on_second)
    res = _run(root, ckpt)
    assert (res["n_done"], res["n_failed"], res["n_skipped"]) == (2, 1, 0)
    manifest = json.loads((out / "manifest.json").read_text())
    status = {r["subject"]: r for r in manifest["scans"]}
    assert status["sub-0001"]["status"] == "failed" and "simulated crash" in status["sub-0001"]["error"]
    assert manifest["versions"]["torch"] == torch.__version__ and manifest["settings"]["n_steps"] == N_STEPS
    assert not (out / "sub-0001" / "sub-0001_done.json").exists()
    # All or nothing: the maps written before the crash never reached the scan's folder.
    assert not (out / "sub-0001").exists() or _visible(out / "sub-0001") == []

    # Per-scan outputs: maps on the scan's grid, predictions = the model's, region rows per target.
    scan = root / "data" / "sub-0000_T1w.nii.gz"
    img = nib.load(out / "sub-0000" / "sub-0000_smocam_right-hippocampus.nii.gz")
    assert img.shape == nib.load(scan).shape and np.allclose(img.affine, nib.load(scan).affine)
    model, meta = load_model(ckpt)
    x, _ = load_scan(scan, meta)
    preds = pd.read_csv(out / "sub-0000" / "sub-0000_predictions.csv")
    np.testing.assert_allclose(preds["prediction"], model(x)[0].detach().numpy(), rtol=1e-5)
    assert preds.loc[preds["explained"], "output"].tolist() == sorted(TARGETS, key=STRUCTURE_NAMES.index)
    regions = pd.read_csv(out / "sub-0000" / "sub-0000_regions.csv")
    assert regions["target"].unique().tolist() == TARGETS
    assert "left_hippocampus" in set(regions["name"])  # names from labels.txt
    # Same numbers as the saved map (scan grid) intersected with the label map (same grid here).
    from captum_smocam.regions import get_region_table

    saved = nib.load(out / "sub-0000" / "sub-0000_smocam_left-thalamus.nii.gz").get_fdata()
    lab = np.asarray(nib.load(root / "data" / "sub-0000_labels.nii.gz").dataobj)
    expect = get_region_table(saved, lab, str(root / "data" / "labels.txt"))
    got = regions[regions["target"] == "left_thalamus"].reset_index(drop=True)
    pd.testing.assert_frame_equal(got[expect.columns], expect, check_exact=False, rtol=1e-5)

    # Cohort table over the two complete scans: mean of the per-scan values.
    table = pd.read_csv(out / "cohort_regions.csv")
    assert table["n"].max() == 2  # a region absent from a scan's label map is not counted
    per_scan = pd.concat([pd.read_csv(out / s / f"{s}_regions.csv") for s in ("sub-0000", "sub-0002")])
    sel = per_scan[(per_scan["target"] == "left_thalamus") & (per_scan["name"] == "right_thalamus")]
    row = table[(table["target"] == "left_thalamus") & (table["name"] == "right_thalamus")]
    np.testing.assert_allclose(row["share_mean"], sel["share"].mean(), rtol=1e-6)
    assert (out / "cohort_summary.png").stat().st_size > 1000

    # Rerun without the crash: finished scans untouched, the crashed one redone.
    monkeypatch.undo()
    before = {s: _mtimes(out / s) for s in ("sub-0000", "sub-0001", "sub-0002")}
    res = _run(root, ckpt)
    assert (res["n_done"], res["n_failed"], res["n_skipped"]) == (1, 0, 2)
    assert _mtimes(out / "sub-0000") == before["sub-0000"]
    assert _mtimes(out / "sub-0002") == before["sub-0002"]
    after = _mtimes(out / "sub-0001")
    assert "sub-0001_done.json" in after and "sub-0001_smocam_left-hippocampus.nii.gz" in after
    assert pd.read_csv(out / "cohort_regions.csv")["n"].max() == 3

    # A run killed before the done-marker of scan 3 was renamed into place: only scan 3 is redone.
    (out / "sub-0002" / "sub-0002_done.json").unlink()
    (out / "sub-0002" / ".sub-0002_regions.csv.abc.part.csv").write_text("half")
    res = _run(root, ckpt)
    assert (res["n_done"], res["n_skipped"]) == (1, 2)
    assert [r["subject"] for r in res["records"] if r["status"] == "done"] == ["sub-0002"]
    assert not list((out / "sub-0002").glob(".*part*"))

    # Other SMOCAM settings: nothing is complete any more.
    res = _run(root, ckpt, n_steps=N_STEPS + 1)
    assert res["n_done"] == 3


def test_corrupt_scan_reported_and_skipped(study, capsys):
    root, ckpt = study
    (root / "data" / "sub-0001_T1w.nii.gz").write_bytes(b"\x1f\x8b not a nifti at all" * 10)
    argv = ["cohort", "--images", str(root / "data" / "sub-*_T1w.nii.gz"), "--model", ckpt,
            "--target", "left_hippocampus", "--labels", str(root / "data" / "sub-*_labels.nii.gz"),
            "--out", str(root / "out"), "--n-steps", str(N_STEPS), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "sub-0001" in err and "failed" in err and "2 done" in err
    manifest = json.loads((root / "out" / "manifest.json").read_text())
    assert [r["status"] for r in manifest["scans"]] == ["done", "failed", "done"]
    assert "sub-0001_T1w.nii.gz" in manifest["scans"][1]["error"] or "cannot read" in manifest["scans"][1]["error"]
    assert pd.read_csv(root / "out" / "cohort_predictions.csv")["subject"].tolist() == ["sub-0000", "sub-0002"]


def test_the_done_marker_records_the_objective_and_its_settings(study):
    """Another objective is another result: the marker's settings name it, so changing it recomputes."""
    from captum_smocam.smocam import DEFAULT_OBJECTIVE, OBJECTIVE_DEFAULTS

    root, ckpt = study
    _run(root, ckpt)
    marker = json.loads((root / "out" / "sub-0000" / "sub-0000_done.json").read_text())
    assert marker["settings"]["objective"] == DEFAULT_OBJECTIVE
    expected = {**OBJECTIVE_DEFAULTS[DEFAULT_OBJECTIVE], "n_steps": N_STEPS}
    assert {k: marker["settings"][k] for k in expected} == expected
    res = _run(root, ckpt, objective="poster")
    assert res["n_done"] == 3
    settings = json.loads((root / "out" / "manifest.json").read_text())["settings"]
    assert settings["objective"] == "poster" and settings["l2_weight"] == OBJECTIVE_DEFAULTS["poster"]["l2_weight"]
    assert "area_weight" not in settings
    assert _run(root, ckpt, objective="poster")["n_skipped"] == 3


def test_the_manifests_say_which_references_smocam_used(study, tmp_path):
    """The tiny model carries no references: SMOCAM falls back, and every record says so; with references
    attached by `smocam references`, the records name them and where they came from."""
    from captum_smocam.models import load_checkpoint
    from captum_smocam.references import attach_references

    root, ckpt = study
    _run(root, ckpt)
    manifest = json.loads((root / "out" / "manifest.json").read_text())
    assert len(manifest["references"]) == 1 and manifest["references"][0].startswith("fallback: ")
    assert all(r["references"] == manifest["references"][0] for r in manifest["scans"])
    marker = json.loads((root / "out" / "sub-0000" / "sub-0000_done.json").read_text())
    assert marker["references"] == manifest["references"][0]
    rerun = _run(root, ckpt)  # skipped scans keep the record of what they were computed with
    assert rerun["n_skipped"] == 3 and all(r["references"].startswith("fallback: ") for r in rerun["records"])
    with_refs = tmp_path / "with_refs.pt"
    attach_references(ckpt, root / "data", with_refs, k=2)
    _run(root, str(with_refs), out="out_refs")
    refs = json.loads((root / "out_refs" / "manifest.json").read_text())["references"]
    created = load_checkpoint(with_refs)[1]["reference_provenance"]["created"]
    assert refs == [f"model: 2 reference_inputs (built from 2 scans in {(root / 'data').resolve()} on {created})"]


def test_cohort_still_exposes_the_input_and_torchrun_helpers():
    """find_scans, subject_id, match_labels (cohort_inputs) and dist_context (_dist) moved out of cohort.py;
    they stay in its __all__, so code that imports them from captum_smocam.cohort keeps working."""
    from captum_smocam import _dist, cohort_inputs

    for name in ("find_scans", "subject_id", "match_labels", "PAIRINGS"):
        assert name in cohort.__all__ and getattr(cohort, name) is getattr(cohort_inputs, name)
    for name in ("DistContext", "dist_context"):
        assert name in cohort.__all__ and getattr(cohort, name) is getattr(_dist, name)


def _gloo_available():
    import torch.distributed as dist

    return dist.is_available() and dist.is_gloo_available()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not _gloo_available(), reason="torch.distributed with the gloo backend is not available")
def test_torchrun_two_ranks_match_one_process(study):
    root, ckpt = study
    _run(root, ckpt, out="one")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "captum_smocam.cli", "cohort",
           "--images", str(root / "data" / "sub-*_T1w.nii.gz"), "--model", ckpt, "--target", ",".join(TARGETS),
           "--labels", str(root / "data" / "sub-*_labels.nii.gz"), "--out", str(root / "two"),
           "--n-steps", str(N_STEPS), "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((root / "two" / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    assert [(r["subject"], r["rank"]) for r in manifest["scans"]] == [("sub-0000", 0), ("sub-0001", 1), ("sub-0002", 0)]
    assert not list((root / "two").glob(".manifest.rank-*"))
    for name in ("cohort_regions.csv", "cohort_predictions.csv"):
        one, two = pd.read_csv(root / "one" / name), pd.read_csv(root / "two" / name)
        pd.testing.assert_frame_equal(one, two, check_exact=False, rtol=1e-4, atol=1e-7)
    a = nib.load(root / "one" / "sub-0001" / "sub-0001_smocam_left-thalamus.nii.gz").get_fdata()
    b = nib.load(root / "two" / "sub-0001" / "sub-0001_smocam_left-thalamus.nii.gz").get_fdata()
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def _overflowing_checkpoint(src_ckpt, path):
    """Finite weights whose outputs overflow to Inf on every scan (a diverged training run)."""
    blob = torch.load(src_ckpt, weights_only=True)
    blob["state_dict"]["head.fc2.weight"].fill_(1e38)
    torch.save(blob, path)
    return str(path)


def test_non_finite_predictions_fail_the_scan(study, capsys):
    root, ckpt = study
    bad = _overflowing_checkpoint(ckpt, root / "overflow.pt")
    argv = ["cohort", "--images", str(root / "data" / "sub-000[01]_T1w.nii.gz"), "--model", bad,
            "--target", "left_hippocampus", "--out", str(root / "out"), "--n-steps", "2", "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "0 done" in err and "2 failed" in err and "not finite" in err
    manifest = json.loads((root / "out" / "manifest.json").read_text())
    assert [r["status"] for r in manifest["scans"]] == ["failed", "failed"]
    assert not list((root / "out").glob("*/*_done.json"))


def _tree(folder: Path):
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_hostile_file_names_stay_inside_out(study):
    """Scans named '..nii.gz' and '...nii.gz' once had the ids '.' and '..': outputs went into --out's parent."""
    root, ckpt = study
    hostile = root / "hostile"
    hostile.mkdir()
    for name in ("..nii.gz", "...nii.gz", "a b.nii.gz"):
        shutil.copy(root / "data" / "sub-0000_T1w.nii.gz", hostile / name)
    parent = root / "parent"
    parent.mkdir()
    # What the old ids touched in the parent: a marker they deleted and temporary files they cleaned.
    for name, text in (("keep.txt", "mine"), (".._done.json", "not smocam's"), (".x.part.csv", "not smocam's")):
        (parent / name).write_text(text)
    before = _tree(parent)
    res = cohort.run_cohort([str(hostile / n) for n in ("..nii.gz", "...nii.gz", "a b.nii.gz")], ckpt,
                            "left_hippocampus", out=parent / "out", n_steps=2, show_progress=False)
    assert (res["n_done"], res["n_failed"]) == (3, 0)
    after = _tree(parent)
    assert {k: v for k, v in after.items() if not k.startswith("out/")} == before
    sids = [r["subject"] for r in res["records"]]
    assert len(set(sids)) == 3
    for sid in sids:
        assert sid not in ("", ".", "..") and not sid.startswith(".") and "/" not in sid and " " not in sid
        assert (parent / "out" / sid / f"{sid}_done.json").is_file()


def test_scan_outputs_are_published_all_or_nothing(study, monkeypatch):
    """A failed publication keeps the scan's previous complete set; stale staging folders are cleaned."""
    import captum_smocam._outputs as outputs

    root, ckpt = study
    out = root / "out"
    _run(root, ckpt)
    before = _tree(out / "sub-0001")
    # Left over from earlier runs: an older version's staging folder (no owner file, an hour old) and one
    # of a run killed while it explained the scan (owner file, its lock long released).
    legacy = out / "sub-0001" / ".smocam-staging-x1y2z3"
    legacy.mkdir()
    (legacy / "sub-0001_predictions.csv").write_text("half")
    os.utime(legacy, (time.time() - 3600,) * 2)
    killed = out / "sub-0001" / ".smocam-staging-killed"
    killed.mkdir()
    (killed / outputs.OWNER_FILE).write_text(json.dumps({"manifest": "sub-0001_done.json"}))

    real, calls = os.replace, []

    def failing(src, dst):  # the 4th move of sub-0001's publication fails (disk full)
        if "sub-0001" in str(dst) and not os.path.basename(src).startswith("."):
            calls.append(src)
            if len(calls) == 4:
                raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", failing)
    res = _run(root, ckpt, n_steps=N_STEPS + 1)  # new settings: every scan is redone
    assert [r["status"] for r in res["records"]] == ["done", "failed", "done"]
    assert "No space left" in res["records"][1]["error"]
    assert _tree(out / "sub-0001") == before  # the old complete set, nothing of the new one
    assert not legacy.exists() and not killed.exists()
    monkeypatch.undo()
    res = _run(root, ckpt, n_steps=N_STEPS + 1)
    assert [r["status"] for r in res["records"]] == ["skipped", "done", "skipped"]



def _cohort_child(root, ckpt, queue, start):
    """One of two concurrent runs on the same --out (a spawned process): each scan takes at least 1 s."""
    torch.set_num_threads(1)
    real = cohort_scan.process_scan

    def slow(*args, **kwargs):
        time.sleep(1.0)
        return real(*args, **kwargs)

    cohort_scan.process_scan = slow
    try:
        start.wait(120)  # both runs start together, whatever their import times
        res = _run(root, ckpt, n_steps=2)
        queue.put([(r["subject"], r["status"], r.get("reason", r.get("error"))) for r in res["records"]])
    except BaseException as exc:  # report, do not hang the parent
        queue.put(repr(exc))


def test_two_runs_on_one_out_share_the_work(study):
    """Two runs started together compute every scan once between them, and neither fails."""
    import multiprocessing

    root, ckpt = study
    ctx = multiprocessing.get_context("spawn")  # fork after torch has run threads here can deadlock the child
    queue, start = ctx.Queue(), ctx.Barrier(2)
    runs = [ctx.Process(target=_cohort_child, args=(root, ckpt, queue, start)) for _ in range(2)]
    for p in runs:
        p.start()
    results = [queue.get(timeout=240) for _ in runs]
    for p in runs:
        p.join(30)
    assert all(isinstance(r, list) for r in results), results
    statuses = [s for r in results for (_, s, _) in r]
    assert statuses.count("failed") == 0, results
    assert statuses.count("done") == 3, results  # each scan computed exactly once
    assert all(len(r) == 3 for r in results)  # both runs report every scan: done, or completed by the other
    assert any(reason == "complete (after waiting for another run)" for r in results for (_, _, reason) in r)
    manifest = json.loads((root / "out" / "manifest.json").read_text())
    assert {r["status"] for r in manifest["scans"]} <= {"done", "skipped"}  # whichever run wrote it last
    assert not list((root / "out").glob(".manifest.*"))  # neither run deleted the other's record files early
    for sid in ("sub-0000", "sub-0001", "sub-0002"):
        assert (root / "out" / sid / f"{sid}_done.json").is_file()


def test_rerun_recomputes_what_changed(study):
    """A scan, label map, LUT or model replaced under the same name is recomputed; an untouched one is not."""
    root, ckpt = study
    data, out = root / "data", root / "out"
    _run(root, ckpt)

    def statuses():
        return {r["subject"]: r["status"] for r in _run(root, ckpt)["records"]}

    shutil.copy(data / "sub-0002_T1w.nii.gz", data / "sub-0001_T1w.nii.gz")  # another scan, same name
    assert statuses() == {"sub-0000": "skipped", "sub-0001": "done", "sub-0002": "skipped"}
    p1 = pd.read_csv(out / "sub-0001" / "sub-0001_predictions.csv")["prediction"]
    p2 = pd.read_csv(out / "sub-0002" / "sub-0002_predictions.csv")["prediction"]
    np.testing.assert_allclose(p1, p2, rtol=1e-6)  # computed from the new content
    marker = json.loads((out / "sub-0001" / "sub-0001_done.json").read_text())
    assert marker["inputs"]["scan"]["size"] == (data / "sub-0001_T1w.nii.gz").stat().st_size

    shutil.copy(data / "sub-0000_labels.nii.gz", data / "sub-0002_labels.nii.gz")
    assert statuses() == {"sub-0000": "skipped", "sub-0001": "skipped", "sub-0002": "done"}

    os.utime(data / "sub-0000_T1w.nii.gz", (time.time() + 60,) * 2)  # touched, same content: nothing to do
    assert set(statuses().values()) == {"skipped"}

    lut = (data / "labels.txt").read_text().replace("left_hippocampus", "Left-Hippocampus")
    (data / "labels.txt").write_text(lut)  # region names change in every table
    assert set(statuses().values()) == {"done"}

    blob = torch.load(ckpt, weights_only=True)
    blob["state_dict"]["head.fc2.bias"] += 1.0
    torch.save(blob, ckpt_copy := root / "model.pt")
    shutil.copy(ckpt_copy, root / "swap.pt")
    assert {r["status"] for r in _run(root, str(root / "swap.pt"))["records"]} == {"done"}
    blob["state_dict"]["head.fc2.bias"] += 1.0
    torch.save(blob, root / "swap.pt")  # same path, new weights
    assert {r["status"] for r in _run(root, str(root / "swap.pt"))["records"]} == {"done"}


def test_label_map_off_the_scan_fails_that_scan_as_explain_refuses_it(study, capsys):
    root, ckpt = study
    lab = root / "data" / "sub-0001_labels.nii.gz"
    img = nib.load(lab)
    far = img.affine.copy()
    far[:3, 3] += 1000.0  # no overlap at all: region tables would be all zeros
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), far), lab)
    res = _run(root, ckpt, n_steps=2)
    assert [r["status"] for r in res["records"]] == ["done", "failed", "done"]
    assert "does not overlap the scan" in res["records"][1]["error"]
    assert not (root / "out" / "sub-0001" / "sub-0001_regions.csv").exists()


def test_scans_without_label_map_have_no_region_table_and_say_so(study, capsys):
    root, ckpt = study
    (root / "data" / "sub-0002_labels.nii.gz").unlink()
    argv = ["cohort", "--images", str(root / "data" / "sub-*_T1w.nii.gz"), "--model", ckpt,
            "--target", "left_hippocampus", "--labels", str(root / "data" / "sub-*_labels.nii.gz"),
            "--out", str(root / "out"), "--n-steps", "2", "--no-progress"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "sub-0002" in err and "no region table" in err
    out = root / "out"
    assert (out / "sub-0000" / "sub-0000_regions.csv").exists() and (out / "sub-0001" / "sub-0001_regions.csv").exists()
    assert not (out / "sub-0002" / "sub-0002_regions.csv").exists()
    # Paired by id: sub-0001's table is computed with sub-0001's own label map.
    manifest = json.loads((out / "manifest.json").read_text())
    labels = {r["subject"]: r["labels"] for r in manifest["scans"]}
    assert labels["sub-0001"].endswith("sub-0001_labels.nii.gz") and labels["sub-0002"] is None
    assert pd.read_csv(out / "cohort_regions.csv")["n"].max() == 2


def test_nan_voxels_are_reported_per_scan_and_constant_scans_fail(study, capsys):
    root, ckpt = study
    for sid, fill in (("sub-0000", "nan"), ("sub-0001", "flat")):
        path = root / "data" / f"{sid}_T1w.nii.gz"
        img = nib.load(path)
        data = np.asarray(img.dataobj, dtype=np.float32).copy()
        if fill == "nan":
            data[:2] = np.nan
        else:
            data[:] = 7.0
        nib.save(nib.Nifti1Image(data, img.affine), path)
    res = _run(root, ckpt, n_steps=2)
    first, second = res["records"][:2]
    assert first["status"] == "done" and "NaN/Inf voxel(s)" in first["warnings"][0]
    assert second["status"] == "failed" and "constant" in second["error"]
    err = capsys.readouterr().err
    assert "sub-0000" in err and "warning" in err and "NaN/Inf" in err


def _dead_run(out):
    """Child process: a run that took its lock, wrote its record file, and was killed (no cleanup)."""
    from captum_smocam._outputs import FileLock

    FileLock(out / ".smocam-locks" / "job-deadbeef0001.lock").acquire(shared=True)
    (out / ".manifest.deadbeef0001.rank-0.json").write_text("[]")
    os._exit(9)


def test_record_files_of_killed_runs_go_and_of_live_runs_stay(study):
    """Before: a killed run's record files stayed until they were 25 h old (a rule of age); now a run is dead
    when no process holds its lock (flock, released by the kernel when the process dies), whatever the age."""
    import multiprocessing

    from captum_smocam._outputs import FileLock

    root, ckpt = study
    out = root / "out"
    out.mkdir()
    child = multiprocessing.get_context("fork").Process(target=_dead_run, args=(out,))
    child.start()
    child.join(30)
    assert child.exitcode == 9 and (out / ".manifest.deadbeef0001.rank-0.json").is_file()
    live = FileLock(out / ".smocam-locks" / "job-live00000001.lock")
    assert live.acquire(shared=True)  # a run still going (here: this process, on another open file)
    (out / ".manifest.live00000001.rank-0.json").write_text("[]")
    try:
        res = _run(root, ckpt, n_steps=2)
    finally:
        live.release()
    assert res["n_failed"] == 0
    assert not (out / ".manifest.deadbeef0001.rank-0.json").exists()
    assert not (out / ".smocam-locks" / "job-deadbeef0001.lock").exists()
    assert (out / ".manifest.live00000001.rank-0.json").is_file()  # its run holds its lock: untouched
    assert [p.name for p in out.glob(".manifest.*")] == [".manifest.live00000001.rank-0.json"]
    assert not [p.name for p in (out / ".smocam-locks").glob("job-*") if "live" not in p.name]  # ours is gone
