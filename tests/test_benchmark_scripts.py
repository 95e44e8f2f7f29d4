"""The scripts in benchmarks/ run end to end in their --quick mode, and a quick run never touches what git tracks.

Each script runs as a subprocess in the repository with its default output
locations, as a user trying the smoke test would run it; the test fails if the
run changed a tracked file (the published results and figures) or left a new
file that git does not ignore. The default suite runs the two quick runs it
always had (compare_methods, asymmetry); the others, about 100 s together, are
marked ``slow`` and skipped by default (``pytest -m slow`` runs them).
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from captum_smocam.benchmarking import shipped_model_available

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "benchmarks" / "runs" / "quick"

needs_vgg = pytest.mark.skipif(not shipped_model_available("vgg"),
                               reason="the shipped model captum_smocam/data/vgg3d_default.pt is absent "
                                      "(train it with benchmarks/train.py, see docs/models.md)")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


def _repo_state():
    """``git status`` (untracked files included) and the size and mtime of every tracked file."""
    stats = {}
    for path in filter(None, _git("ls-files", "-z").split("\0")):
        p = REPO / path
        stats[path] = (p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else None
    return _git("status", "--porcelain", "--untracked-files=all"), stats


@pytest.fixture
def repo_untouched():
    """Fail the test if it changed a file git tracks, or added one git does not ignore."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout of the repository")
    status, stats = _repo_state()
    yield
    status_after, stats_after = _repo_state()
    written = sorted(p for p in stats if stats_after.get(p) != stats[p])
    assert not written, f"the run wrote over tracked files: {written}"
    assert status_after == status, f"the run left files git does not ignore:\n{status_after}"


def run_script(name, *args):
    """Run ``benchmarks/<name>.py`` with ``args`` from the repository root; fail with its output if it fails."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), *args], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"{name}.py {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _fresh(*paths: Path):
    """The paths, with any file left there by an earlier run removed."""
    for p in paths:
        p.unlink(missing_ok=True)
    return paths


@needs_vgg
def test_compare_methods_quick_scores_every_method(repo_untouched):
    csv, rnd_csv, fig = _fresh(QUICK / "compare_methods_quick.csv", QUICK / "compare_randomization_quick.csv",
                               QUICK / "comparison_right_lateral_ventricle_quick.png")
    run_script("compare_methods", "--quick")
    df = pd.read_csv(csv)
    assert sorted(df["method"]) == sorted(["smocam", "smocam_poster", "gradcam", "occlusion", "saliency", "smoothgrad",
                                           "deeplift", "integrated_gradients"])
    assert set(df["target"]) == {"right_lateral_ventricle"}
    for c in ("mass_inside", "mass_dilated", "auroc", "side_specificity", "mass_within_30mm", "false_positive_rate",
              "hit_top1", "hit_top3", "max_within_mm", "mass_dilated_or_contra", "max_within_mm_or_contra"):
        assert df[c].between(0, 1).all(), c
    assert (df["mass_dilated"] >= df["mass_inside"]).all() and (df["mass_within_30mm"] >= df["mass_dilated"]).all()
    assert (df["n_components"] >= 1).all() and (df["max_distance_mm"] >= 0).all()
    assert (df["seconds_per_map"] > 0).all() and (df["peak_rss_mb"] > 0).all()
    used = df.set_index("method").loc["smocam", "reference_source"]
    assert used == "model: 8 reference_inputs (the checkpoint's own)"
    rnd = pd.read_csv(rnd_csv)
    assert set(rnd["step_name"]) == {"top (head)", "all layers"}
    assert set(rnd["layer"]) == {"head", "features"}
    assert set(rnd["method"]) == set(df["method"])
    assert fig.stat().st_size > 10_000


@needs_vgg
def test_compare_methods_scores_smocam_alone_with_other_references_and_summarises_csvs(tmp_path):
    from captum_smocam import synth

    synth.write_cohort(tmp_path / "scans", 2, seed=7, show_progress=False)  # references "from the user's scans"
    out = tmp_path / "run"
    proc = run_script("compare_methods", "--methods", "smocam", "--smocam-references", "none",
                      f"scans:{tmp_path / 'scans'}", "--reference-k", "2", "--split", "val", "--n-subjects", "2",
                      "--targets", "right_hippocampus", "--smocam-steps", "3", "--randomization-subjects", "0",
                      "--random-orderings", "0", "--fractions", "0", "0.5", "1", "--out-dir", str(out))
    df = pd.read_csv(out / "compare_methods.csv")
    assert sorted(set(df["method"])) == ["smocam_norefs", "smocam_scanrefs"]
    assert sorted(set(df["subject"])) == [10000, 10001]  # the validation split of the shipped model
    used = df.drop_duplicates("method").set_index("method")["reference_source"]
    assert used["smocam_norefs"].startswith("fallback:")
    assert used["smocam_scanrefs"].startswith("model: 2 reference_inputs (scans: 2 built from")
    assert (out / "comparison_right_lateral_ventricle.png").exists() is False  # that target was not explained
    assert "val subjects" in proc.stdout
    # --summary merges the CSVs of several runs and writes the report without computing anything
    other = df.copy()
    other["method"] = other["method"].map({"smocam_norefs": "gradcam", "smocam_scanrefs": "saliency"})
    other["auroc"] = 0.5
    other.to_csv(tmp_path / "baselines.csv", index=False)
    run_script("compare_methods", "--summary", str(out / "compare_methods.csv"), str(tmp_path / "baselines.csv"),
               "--out-dir", str(tmp_path / "summary"))
    text = (tmp_path / "summary" / "compare_summary.md").read_text()
    assert "**hit_top1** (higher is better)" in text and "References SMOCAM used:" in text
    ranks = pd.read_csv(tmp_path / "summary" / "compare_ranks.csv")
    auroc = ranks[ranks["score"] == "auroc"].set_index("method")
    assert set(auroc.index) == {"smocam_norefs", "smocam_scanrefs", "gradcam", "saliency"}
    assert auroc.loc["gradcam", "mean"] == 0.5 and pd.isna(auroc.loc["smocam_norefs", "vs_reference"])  # the reference
    verdicts = pd.read_csv(tmp_path / "summary" / "compare_verdicts.csv")
    assert set(verdicts["smocam"]) == {"smocam_norefs", "smocam_scanrefs"}


@needs_vgg
def test_asymmetry_quick_writes_consistent_tables_and_figures(repo_untouched):
    models = ["vgg"] + (["vgg_independent"] if shipped_model_available("vgg_independent") else [])
    out = QUICK / "asymmetry"
    tables = _fresh(*(out / f"{n}_quick.csv" for n in ("predictions", "reference", "attention", "regions")))
    figures = _fresh(*(out / f"asymmetry_{n}_quick.png" for n in ("distribution", "scatter", "masks")))
    # No training cache in the scratch folder: the reference volumes go through cohort_volumes, which the
    # script checks against synth.generate_subject.
    run_script("asymmetry", "--quick", "--models", *models, "--cache-dir", str(out / "no-cache"))
    preds, ref, att, regions = (pd.read_csv(p) for p in tables)
    assert set(preds.model) == set(models)
    tail = preds[preds.kind == "override"]
    assert len(tail) == len(models)
    # +40 % case: the right hippocampus is 1.2/0.8 = 1.5 x the left one, exactly.
    assert np.allclose(tail.true_right / tail.true_left, 1.5, rtol=1e-3)
    assert np.allclose(preds.true_asym, preds.true_right - preds.true_left, atol=2e-4)  # CSV keeps 4 decimals
    assert np.allclose(preds.pred_asym, preds.pred_right - preds.pred_left, atol=2e-4)
    assert len(ref) == 4 * len(models)
    assert set(att.target) == {"left_hippocampus", "right_hippocampus"}
    assert att.side_specificity.between(0, 1).all() and att.hemisphere_share.between(0, 1).all()
    assert regions.share.between(0, 1).all()
    for fig in figures:
        assert fig.stat().st_size > 1000


@pytest.mark.slow
@needs_vgg
def test_sweep_quick_ranks_its_configurations(repo_untouched):
    csv, md = _fresh(QUICK / "sweep_smocam_quick.csv", QUICK / "sweep_summary_quick.md")
    run_script("sweep_smocam", "--quick")
    assert sorted(set(pd.read_csv(csv)["config"])) == ["base(5 steps)", "poster"]
    text = md.read_text()
    assert "| 1 |" in text and "Selection rule" in text


@pytest.mark.slow
def test_speed_quick_times_and_measures_every_method(repo_untouched):
    md, js = _fresh(QUICK / "speed" / "speed_quick.md", QUICK / "speed" / "speed_quick.json")
    run_script("speed", "--quick", "--poster-scale", "--memory-vs-outputs", "2", "4")
    report = json.loads(js.read_text())
    assert [r["k"] for r in report["memory_vs_outputs"]] == [2, 4] and report["memory_vs_outputs"][0]["ratio"] == 1.0
    assert all(r["peak_mib"] > 0 for r in report["memory_vs_outputs"]) and "loadavg_end" in report["info"]
    assert {r["method"] for r in report["memory"]} == {"naive", "fast", "fast-stock", "hook", "fast K", "LayerGradCam",
                                                        "Saliency", "DeepLift", "Occlusion"}
    assert all(r["peak_mib"] > 0 for r in report["memory"]) and "Peak extra memory" in md.read_text()
    assert all(r["suffix_flops"] > 0 and r["fast/roofline"] > 0 for r in report["per_mask"])
    assert report["pairs"] and report["autocast"] and report["trace"][0]["cold_s"] > report["trace"][0]["warm_s"]
    assert [r["layer"] for r in report["poster"]] == ["features.pool1", "features.conv2"]
    assert all("extrapolated from 2 outputs" == r["all_165_how"] for r in report["poster"])
    text = md.read_text()
    assert "Issue 15's criteria" in text and "The poster's scale" in text and "Mixed precision" in text
    assert "Peak memory vs outputs" in text


def test_gpu_script_refuses_to_start_without_cuda(tmp_path):
    import os

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_run.sh")], cwd=REPO, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 1 and "no CUDA device" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing was started


def test_speed_refuses_cuda_cleanly_where_there_is_none():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "speed.py"), "--device", "cuda", "--quick"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "torch.cuda.is_available() is False" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cohort_throughput_quick_times_the_cohort_command(repo_untouched):
    (report,) = _fresh(QUICK / "cohort_throughput" / "throughput.json")
    run_script("cohort_throughput", "--quick")
    rows = json.loads(report.read_text())["results"]
    assert [(r["nprocs"], r["variant"]) for r in rows] == [(1, "plans"), (1, "stock")]
    assert all(r["n_scans"] == 2 and r["wall_s"] > 0 for r in rows)
    assert rows[1]["plans"] == ["stock"] and rows[1]["env"]["SMOCAM_KERNEL_TUNING"] == "0"


@pytest.mark.slow
def test_synth_speed_quick_reports_the_volume_check(repo_untouched):
    proc = run_script("synth_speed", "--quick")
    assert "2 subjects" in proc.stdout and "realised vs drawn volume factor" in proc.stdout


@pytest.mark.slow
@needs_vgg
def test_report_atypicality_quick_ranks_both_models(repo_untouched):
    out = QUICK / "report_atypicality"
    (results,) = _fresh(out / "report_atypicality_quick.md")
    shutil.rmtree(out, ignore_errors=True)  # a fresh run: subjects, cohort runs and reports
    run_script("report_atypicality", "--quick")
    table = pd.read_csv(results.with_suffix(".csv"))
    assert sorted(table["model"].unique()) == ["vgg", "vgg_independent"]
    for _, d in table.groupby("model"):
        assert sorted(d["rank"]) == list(range(1, 7)) and d["tail"].sum() == 2  # 3 natural + -40, 0, +40 %
        assert d.sort_values("rank")["atypicality"].is_monotonic_decreasing
    assert "precision_at_k" in results.read_text()
    assert (out / "vgg" / "report.html").is_file() and (out / "vgg_independent" / "report.html").is_file()
