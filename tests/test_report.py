"""`smocam report`: a self-contained HTML page of a cohort run, and the atypicality score it ranks subjects by."""
import base64
import io
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from captum_smocam import cohort
from captum_smocam.cli import main
from captum_smocam.models import VGG3D
from captum_smocam.report import atypicality_scores, load_run, region_share_matrix, robust_z, write_report
from _study import make_tiny_study  # noqa: E402

SPACING = 12.0  # 14 x 17 x 15 grid: tiny and non-cubic
TARGETS = ["left_hippocampus", "right_hippocampus"]
N_STEPS = 4
GOOD = ["sub-0000", "sub-0001", "sub-0002", "sub-0003"]
BAD = "sub-0004"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished cohort run of a tiny random VGG3D: four good scans and one corrupt scan (failed)."""
    root = tmp_path_factory.mktemp("report")
    make_tiny_study(root, 5, SPACING)
    (root / "data" / f"{BAD}_T1w.nii.gz").write_bytes(b"not a nifti file")
    res = cohort.run_cohort(str(root / "data" / "sub-*_T1w.nii.gz"), str(root / "tiny.pt"), ",".join(TARGETS),
                            labels=str(root / "data" / "sub-*_labels.nii.gz"), out=root / "out", n_steps=N_STEPS,
                            show_progress=False)
    assert (res["n_done"], res["n_failed"]) == (4, 1)
    return root


class _Page(HTMLParser):
    """Every tag with its attributes, and the visible text."""

    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def test_report_is_self_contained_and_shows_every_section(run_dir):
    path = write_report(run_dir / "out", truth=run_dir / "data" / "volumes.csv", show_progress=False)
    assert path == run_dir / "out" / "report.html"
    page = _parse(path)
    text = " ".join(page.text)

    # Every image is an inline PNG that decodes; 5 per target: mean map, region shares, predicted vs true,
    # atypicality vs error, the top-k subjects beside the mean.
    images = [a["src"] for tag, a in page.tags if tag == "img"]
    assert len(images) == 5 * len(TARGETS)
    for src in images:
        assert src.startswith("data:image/png;base64,")
        pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert float(pixels[..., :3].std()) > 0.01  # not a blank canvas

    # Nothing to fetch: no scripts, style sheets, frames or external links.
    assert not any(tag in ("script", "link", "iframe", "object", "embed") for tag, _ in page.tags)
    for tag, attrs in page.tags:
        for key in ("src", "href"):
            value = attrs.get(key)
            if value is not None:
                assert value.startswith(("data:image/png;base64,", "#")), (tag, key, value[:40])
    raw = path.read_text(encoding="utf-8")
    assert "http://" not in raw and "https://" not in raw and "url(" not in raw

    # Every subject listed per target, the failed scan with its error, the settings of the run.
    for t in TARGETS:
        assert t in text
    for s in GOOD:
        assert text.count(s) >= len(TARGETS)
    assert BAD in text and "cannot read" in text.lower()
    settings = {k: v for k, v in zip(page.text, page.text[1:])}  # cell -> the next cell: setting -> value
    assert settings["model"] == str(run_dir / "tiny.pt") and settings["layer"] == "features.block2"
    assert settings["objective"] == "preserve" and settings["steps"] == str(N_STEPS)
    assert "references" in settings and settings["targets"] == ", ".join(TARGETS)

    # With the truth: R² of the predictions, as computed from the run's files.
    pred = pd.read_csv(run_dir / "out" / "cohort_predictions.csv").set_index("subject")
    true = pd.read_csv(run_dir / "data" / "volumes.csv").set_index("subject").loc[GOOD]
    p, y = pred.loc[GOOD, "right_hippocampus"].to_numpy(), true["right_hippocampus"].to_numpy()
    r2 = 1 - ((p - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert f"{r2:.3g}" in text


def test_report_without_truth_and_on_a_subject_scan(run_dir, tmp_path):
    out = write_report(run_dir / "out", tmp_path / "r.html", top_k=1, background="sub-0002", show_progress=False)
    page = _parse(out)
    images = [a["src"] for tag, a in page.tags if tag == "img"]
    assert len(images) == 3 * len(TARGETS)  # mean map, region shares, top-1 beside the mean
    assert "sub-0002" in " ".join(page.text)
    assert not list((run_dir / "out").glob("r.html"))  # written where asked, nothing in the run folder


def test_cli_report_and_cohort_report_flag(run_dir, tmp_path, capsys):
    out = tmp_path / "cli.html"
    rc = main(["report", str(run_dir / "out"), "--truth", str(run_dir / "data" / "volumes.csv"), "--out", str(out),
               "--top-k", "2", "--no-progress"])
    assert rc == 0 and out.is_file() and str(out) in capsys.readouterr().out

    data = tmp_path / "data"
    shutil.copytree(run_dir / "data", data)
    (data / f"{BAD}_T1w.nii.gz").unlink()
    rc = main(["cohort", "--images", str(data / "sub-000[01]_T1w.nii.gz"), "--labels",
               str(data / "sub-000[01]_labels.nii.gz"), "--model", str(run_dir / "tiny.pt"), "--target",
               "right_hippocampus", "--n-steps", "2", "--out", str(tmp_path / "c"), "--no-progress", "--report"])
    assert rc == 0
    assert "sub-0001" in " ".join(_parse(tmp_path / "c" / "report.html").text)

    # Every scan failed: the cohort's status says so (1), the report says why it is absent.
    (data / "sub-0001_T1w.nii.gz").write_bytes(b"corrupt")
    capsys.readouterr()
    rc = main(["cohort", "--images", str(data / "sub-0001_T1w.nii.gz"), "--model", str(run_dir / "tiny.pt"),
               "--target", "right_hippocampus", "--n-steps", "2", "--out", str(tmp_path / "d"), "--no-progress",
               "--report"])
    assert rc == 1 and "no report:" in capsys.readouterr().err and not (tmp_path / "d" / "report.html").exists()


def test_errors_are_one_line_with_the_bad_value(run_dir, tmp_path, capsys):
    def error(*argv):
        assert main(["report", *map(str, argv)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("smocam: error:")
        return err

    assert "run folder not found" in error(tmp_path / "nope")
    assert "no manifest.json" in error(run_dir / "data")
    other = tmp_path / "other.csv"
    pd.DataFrame({"subject": ["sub-9999"], "right_hippocampus": [3.0]}).to_csv(other, index=False)
    assert "no row for any of the run's 4 subjects" in error(run_dir / "out", "--truth", other)
    pd.DataFrame({"id": ["sub-0000"]}).to_csv(other, index=False)
    assert "no 'subject' column" in error(run_dir / "out", "--truth", other)
    assert "truth file not found" in error(run_dir / "out", "--truth", tmp_path / "missing.csv")
    assert "'sub-9999'" in error(run_dir / "out", "--background", "sub-9999", "--out", tmp_path / "x.html")
    assert "--top-k must be >= 0, got -1" in error(run_dir / "out", "--top-k", "-1")

    # A run folder whose maps were deleted: no maps to report.
    copy = tmp_path / "copy"
    shutil.copytree(run_dir / "out", copy)
    (copy / "report.html").unlink(missing_ok=True)
    for p in copy.glob("sub-*/*_smocam_*.nii.gz"):
        p.unlink()
    assert "no maps" in error(copy)
    assert not (copy / "report.html").exists()


def test_load_run_reads_complete_scans_only(run_dir):
    run = load_run(run_dir / "out")
    assert run.subjects == GOOD and [r["subject"] for r in run.failed] == [BAD]
    assert run.targets == TARGETS and list(run.predictions.index) == GOOD
    shares = region_share_matrix(run.regions, "right_hippocampus")
    assert list(shares.index) == GOOD and "left_hippocampus" in shares.columns
    own = pd.read_csv(run_dir / "out" / "sub-0001" / "sub-0001_regions.csv")
    own = own[own["target"] == "right_hippocampus"].set_index("name")["share"]
    np.testing.assert_allclose(shares.loc["sub-0001", own.index], own)
    assert ((shares.sum(axis=1) > 0) & (shares.sum(axis=1) <= 1 + 1e-9)).all()


# ----------------------------------------------------------------------------- the score
def test_an_outlier_scores_highest_and_typical_subjects_score_about_one():
    rng = np.random.default_rng(0)
    regions = [f"r{j}" for j in range(12)]
    typical = pd.DataFrame(0.08 + 0.01 * rng.standard_normal((200, 12)), columns=regions)
    scores = atypicality_scores(typical)
    assert 0.85 < float(scores.median()) < 1.15  # RMS of standard normal z-scores

    odd = typical.copy()
    odd.loc[17, "r3"] += 0.1  # one subject looks at one region much more (10 robust sd)
    scores = atypicality_scores(odd)
    assert scores.idxmax() == 17 and scores[17] > 2.5
    np.testing.assert_allclose(scores.drop(17), atypicality_scores(typical).drop(17), rtol=0.05)


def test_the_score_is_robust_to_many_outliers_where_mean_and_sd_are_not():
    rng = np.random.default_rng(1)
    shares = pd.DataFrame(0.1 + 0.01 * rng.standard_normal((30, 6)), columns=list("abcdef"))
    shares.iloc[:9, 0] += 0.2  # 30 % of the cohort shifted: they stay far out by median / MAD
    robust = atypicality_scores(shares)
    assert robust.iloc[:9].min() > robust.iloc[9:].max()
    z_classic = (shares - shares.mean()) / shares.std()
    classic = np.sqrt((z_classic ** 2).mean(axis=1))
    assert classic.iloc[:9].min() < 1.5  # a mean / SD score barely notices them
    assert robust.iloc[:9].min() > 3 > 1.5 > classic.iloc[:9].max()


def test_robust_z_definition_missing_regions_and_bad_input():
    shares = pd.DataFrame({"a": [0.50, 0.52, 0.48, 0.90], "b": [0.2, 0.2, 0.2, 0.2], "c": [0.1, np.nan, 0.3, 0.2]},
                          index=["s1", "s2", "s3", "s4"])
    z = robust_z(shares)
    mad = np.median(np.abs(shares["a"] - 0.51))
    np.testing.assert_allclose(z["a"], (shares["a"] - 0.51) / (1.4826 * mad))
    np.testing.assert_allclose(z["b"], 0.0)  # no spread: the floor keeps it finite
    assert np.isnan(z.loc["s2", "c"]) and np.isfinite(atypicality_scores(shares)["s2"])
    np.testing.assert_allclose(atypicality_scores(shares), np.sqrt((z ** 2).mean(axis=1, skipna=True)))
    with pytest.raises(ValueError, match="at least 3 subjects"):
        atypicality_scores(shares.iloc[:2])
    with pytest.raises(ValueError, match="infinite"):
        atypicality_scores(shares.replace(0.2, np.inf))
    with pytest.raises(TypeError, match="DataFrame"):
        atypicality_scores(shares.to_numpy())


# ----------------------------------------------------------------------------- a real browser
def test_screenshot_in_headless_chromium(run_dir, tmp_path):
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless Chromium installed (apt-get install chromium)")
    report = write_report(run_dir / "out", tmp_path / "report.html", truth=run_dir / "data" / "volumes.csv",
                          show_progress=False)
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-extensions", "--window-size=1200,3000", f"--screenshot={shot}",
                    report.as_uri()], check=False, capture_output=True, timeout=120)
    assert shot.is_file()
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (3000, 1200)
    assert float(pixels[..., :3].std()) > 0.05  # the page rendered text and figures, not a blank or error page
