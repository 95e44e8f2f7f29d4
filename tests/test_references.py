"""References from the user's own scans: found, drawn, built with explain's preprocessing, attached, reported."""
import os

import numpy as np
import pytest
import torch

from captum_smocam import SMOCAM, synth
from captum_smocam.cli import main
from captum_smocam.models import VGG3D, load_checkpoint, save_checkpoint, set_reference_inputs
from captum_smocam.nifti import load_scan
from captum_smocam.references import (
    PROVENANCE_KEY,
    attach_references,
    build_references,
    choose_reference_scans,
    describe_references,
    find_reference_scans,
)

SPACING = 12.0  # a 14 x 17 x 15 grid: tiny, and not cubic


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    d = tmp_path_factory.mktemp("refs")
    synth.write_cohort(d / "scans", 5, seed=3, spacing=SPACING, show_progress=False)
    shape, affine = synth.default_grid(SPACING)
    n = len(synth.STRUCTURE_NAMES)
    torch.manual_seed(0)
    model = VGG3D(n, channels=(4, 8), output_mean=[5.0] * n, output_std=[1.0] * n).eval()
    meta = {"output_names": list(synth.STRUCTURE_NAMES), "input_shape": [int(s) for s in shape],
            "affine": np.asarray(affine).tolist(), "intensity_normalization": "zscore_nonzero",
            "default_layer": "features.block2", "spacing_mm": SPACING}
    ckpt = d / "tiny.pt"
    save_checkpoint(ckpt, model, meta)
    return {"dir": d, "scans": d / "scans", "ckpt": ckpt, "meta": meta, "shape": tuple(int(s) for s in shape)}


def test_find_reference_scans_takes_a_folders_t1_scans_or_globs_lists_and_paths(study, tmp_path):
    t1 = [study["scans"] / f"sub-000{i}_T1w.nii.gz" for i in range(5)]
    assert find_reference_scans(study["scans"]) == t1  # the label maps beside them are left out
    assert find_reference_scans(str(study["scans"] / "sub-000[12]_T1w.nii.gz")) == t1[1:3]
    listing = tmp_path / "refs.txt"
    listing.write_text(f"# two scans\n{t1[4]}\n{os.path.relpath(t1[0], tmp_path)}\n")
    assert find_reference_scans(listing) == [t1[0], t1[4]]
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.nii").write_bytes(b"")
    (plain / "b.nii.gz").write_bytes(b"")
    assert [p.name for p in find_reference_scans(plain)] == ["a.nii", "b.nii.gz"]  # no *_T1w: every NIfTI
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no NIfTI file"):
        find_reference_scans(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="missing.nii"):
        find_reference_scans([t1[0], tmp_path / "missing.nii"])


def test_choose_reference_scans_is_a_seeded_draw_without_replacement():
    paths = [f"/d/s{i:02d}.nii" for i in range(20)]
    a = choose_reference_scans(paths, k=8, seed=0)
    assert a == choose_reference_scans(list(reversed(paths)), k=8, seed=0)  # the sorted list is drawn from
    assert len(set(a)) == 8 and a == sorted(a)
    assert a != choose_reference_scans(paths, k=8, seed=1)
    with pytest.raises(ValueError, match="found 3 scan.*k=8"):
        choose_reference_scans(paths[:3], k=8)
    for bad in (0, 65, 2.5, True):
        with pytest.raises(ValueError, match="k must be an integer in \\[1, 64\\]"):
            choose_reference_scans(paths, k=bad)


def test_build_references_preprocesses_exactly_as_explain(study):
    refs = build_references(study["scans"], study["meta"], k=3, seed=2)
    assert refs.shape == (3, 1, *study["shape"]) and refs.dtype == torch.float32
    chosen = choose_reference_scans(find_reference_scans(study["scans"]), k=3, seed=2)
    expected = torch.cat([load_scan(p, study["meta"])[0] for p in chosen])
    assert torch.equal(refs, expected)
    # z-scored over the foreground: each reference has mean 0 and sd 1 over its voxels above the background
    for r in refs:
        fg = r[r > r.min()]
        assert abs(float(fg.mean())) < 0.05 and abs(float(fg.std()) - 1) < 0.05
    with pytest.raises(ValueError, match="metadata lacks key"):
        build_references(study["scans"], {"output_names": ["a"]}, k=2)


def test_attach_references_writes_a_checkpoint_that_carries_them_with_provenance(study, tmp_path):
    out = tmp_path / "with_refs.pt"
    meta = attach_references(study["ckpt"], study["scans"], out, k=4, seed=1)
    model, loaded = load_checkpoint(out)
    refs = build_references(study["scans"], study["meta"], k=4, seed=1)
    assert torch.equal(model.reference_inputs, refs)  # stored exactly (save_checkpoint: float16 only if lossless)
    prov = loaded[PROVENANCE_KEY]
    assert prov == meta[PROVENANCE_KEY] and loaded["n_reference_inputs"] == 4
    assert prov["k"] == 4 and prov["seed"] == 1 and prov["n_candidates"] == 5 and "replaces" not in prov
    assert all(os.path.isabs(f) and f.endswith("_T1w.nii.gz") for f in prov["files"])
    assert len(prov["sha256"]) == 4 and prov["preprocessing"]["intensity_normalization"] == "zscore_nonzero"
    assert prov["preprocessing"]["input_shape"] == list(study["shape"])
    # The model's other metadata is kept; the original checkpoint is unchanged.
    assert loaded["output_names"] == study["meta"]["output_names"]
    assert not hasattr(load_checkpoint(study["ckpt"])[0], "reference_inputs")
    # SMOCAM uses them, and says so.
    x, _ = load_scan(study["scans"] / "sub-0000_T1w.nii.gz", loaded)
    smocam = SMOCAM(model, model.features.block2)
    smocam.attribute(x, target=1, n_steps=2)
    assert smocam.reference_source == "model: 4 reference_inputs"
    assert describe_references(smocam.reference_source, loaded) == (
        f"model: 4 reference_inputs (built from 4 scans in {study['scans'].resolve()} on {prov['created']})")
    # Replacing references records the ones replaced; an existing file is not overwritten unasked.
    again = attach_references(out, study["scans"], tmp_path / "again.pt", k=2, seed=0)
    assert again[PROVENANCE_KEY]["replaces"]["k"] == 4
    with pytest.raises(FileExistsError, match="exists"):
        attach_references(study["ckpt"], study["scans"], out, k=2)
    assert attach_references(study["ckpt"], study["scans"], out, k=2, overwrite=True)["n_reference_inputs"] == 2
    with pytest.raises(FileNotFoundError, match="does not exist"):
        attach_references(study["ckpt"], study["scans"], tmp_path / "no" / "such.pt", k=2)


def test_smocam_says_when_it_falls_back_and_describe_references_reads_every_source():
    torch.manual_seed(0)
    net = VGG3D(2, channels=(4, 8)).eval()
    x = torch.randn(1, 1, 7, 8, 9)
    smocam = SMOCAM(net, net.features.block2)
    assert smocam.reference_source is None
    smocam.attribute(x, target=0, n_steps=2)
    assert smocam.reference_source.startswith("fallback: ") and "no reference_inputs" in smocam.reference_source
    set_reference_inputs(net, torch.randn(3, 1, 7, 8, 9))
    smocam.attribute(x, target=0, n_steps=2)
    assert smocam.reference_source == "model: 3 reference_inputs"
    assert describe_references(smocam.reference_source, {}) == "model: 3 reference_inputs (the checkpoint's own)"
    assert describe_references("baselines: 2 given", {}) == "baselines: 2 given"
    assert describe_references(None) == "none: no SMOCAM map"


def test_smocam_references_command(study, tmp_path, capsys):
    out = tmp_path / "cli.pt"
    assert main(["references", "--model", str(study["ckpt"]), "--scans", str(study["scans"]), "--k", "3",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 reference inputs" in text and text.count("_T1w.nii.gz") == 3
    model, meta = load_checkpoint(out)
    assert model.reference_inputs.shape == (3, 1, *study["shape"])
    assert len(meta[PROVENANCE_KEY]["files"]) == 3
    # Errors are one line, exit status 2, and nothing is written over.
    before = out.read_bytes()
    assert main(["references", "--model", str(study["ckpt"]), "--scans", str(study["scans"]), "--k", "3",
                 "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["references", "--model", str(study["ckpt"]), "--scans", str(study["scans"]), "--k", "9",
                 "--out", str(tmp_path / "k9.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smocam: error: found 5 scan(s); need at least k=9") and err.count("\n") == 1
    assert not (tmp_path / "k9.pt").exists()
    assert main(["references", "--model", str(study["ckpt"]), "--scans", str(study["scans"]), "--k", "2",
                 "--out", str(out), "--force"]) == 0
    assert load_checkpoint(out)[0].reference_inputs.shape[0] == 2
