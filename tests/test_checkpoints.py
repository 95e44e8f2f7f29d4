"""captum_smocam.models.user_checkpoints: any architecture saved and loaded, read by every entry point (issue 20)."""
import os
import textwrap

import nibabel as nib
import numpy as np
import pytest
import torch

from captum_smocam import describe_model
from captum_smocam.cli import main
from captum_smocam.models import load_checkpoint, save_checkpoint
from captum_smocam.pipeline import resolve_model

SHAPE = (7, 8, 9)
AFFINE = [[-2.0, 0, 0, 6.0], [0, 2.0, 0, -7.0], [0, 0, 2.0, -8.0], [0, 0, 0, 1]]  # LAS, 2 mm

NETS = '''
import torch
from torch import nn


class UserNet(nn.Module):
    def __init__(self, n_outputs=2, width=4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(1, width, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(width, n_outputs))

    def forward(self, x):
        return self.head(self.body(x))


def build(n_outputs=2, width=4):
    return UserNet(n_outputs, width)
'''


@pytest.fixture
def user_nets(tmp_path, monkeypatch):
    """An importable module of the user's own (``usernets``), as a package installed beside the project."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "usernets.py").write_text(textwrap.dedent(NETS))
    monkeypatch.syspath_prepend(str(folder))
    import importlib

    import usernets

    return importlib.reload(usernets)


@pytest.fixture
def described(user_nets):
    torch.manual_seed(0)
    net = user_nets.UserNet(2, 4).eval()
    describe_model(net, input_shape=SHAPE, affine=AFFINE, output_names=["left_thing", "right_thing"],
                   output_units="cm3", output_std=[0.5, 0.5], normalization="monai_nonzero", default_layer="body",
                   reference_inputs=torch.randn(2, 1, *SHAPE))
    return net


def test_factory_checkpoint_round_trip(tmp_path, described):
    """On today's main save_checkpoint refuses any class but VGG3D/AlexNet3D (TypeError)."""
    path = tmp_path / "net.pt"
    meta = save_checkpoint(path, described, factory="usernets:UserNet", factory_kwargs={"n_outputs": 2, "width": 4})
    assert meta["arch"] == "factory" and meta["output_names"] == ["left_thing", "right_thing"]
    assert meta["n_reference_inputs"] == 2
    model, got = load_checkpoint(path)  # weights-only: no trust needed for an nn.Module class
    x = torch.randn(1, 1, *SHAPE)
    torch.testing.assert_close(model(x), described(x))
    assert got["default_layer"] == "body" and got["intensity_normalization"] == "monai_nonzero"
    assert model.reference_inputs.shape == (2, 1, *SHAPE)
    model2, meta2, file = resolve_model(str(path))
    assert file.name == "net.pt" and meta2["output_names"] == ["left_thing", "right_thing"]


def test_factory_that_is_a_function_needs_trust(tmp_path, described):
    path = tmp_path / "net.pt"
    save_checkpoint(path, described, factory="usernets:build", factory_kwargs={"width": 4})
    with pytest.raises(ValueError, match=r"a function, not a torch.nn.Module class.*trust_checkpoint=True"):
        load_checkpoint(path)
    model, _ = load_checkpoint(path, trust_checkpoint=True)
    x = torch.randn(1, 1, *SHAPE)
    torch.testing.assert_close(model(x), described(x))


def test_pickled_module_needs_trust(tmp_path, described):
    path = tmp_path / "whole.pt"
    save_checkpoint(path, described, trust_pickle=True)
    with pytest.raises(ValueError, match=r"refusing to load .*trust_checkpoint=True") as err:
        load_checkpoint(path)
    assert len(str(err.value)) < 600
    model, meta = load_checkpoint(path, trust_checkpoint=True)
    x = torch.randn(1, 1, *SHAPE)
    torch.testing.assert_close(model(x), described(x))
    assert meta["arch"] == "pickled_module" and model.reference_inputs.shape == (2, 1, *SHAPE)
    assert hasattr(described, "reference_inputs")  # the user's module is left as it was


def test_save_refuses_without_a_route_or_a_description(tmp_path, user_nets, described):
    with pytest.raises(TypeError, match=r"factory='package.module:callable'.*trust_pickle=True"):
        save_checkpoint(tmp_path / "a.pt", described)
    with pytest.raises(ValueError, match=r"input_shape must be 3 positive ints.*describe_model"):
        save_checkpoint(tmp_path / "b.pt", user_nets.UserNet(), factory="usernets:UserNet")
    with pytest.raises(ValueError, match=r"factory must be 'package.module:callable'"):
        save_checkpoint(tmp_path / "c.pt", described, factory="usernets.UserNet")
    assert not any(tmp_path.glob("*.pt"))


def test_messages_stay_short_for_mismatched_or_bare_weights(tmp_path, described, user_nets):
    """On today's main a bare state dict's error listed every weight name (43 KB for a DenseNet)."""
    path = tmp_path / "net.pt"
    save_checkpoint(path, described, factory="usernets:UserNet", factory_kwargs={"width": 8})
    with pytest.raises(ValueError, match=r"weights do not fit .*of another shape") as err:
        load_checkpoint(path)
    assert len(str(err.value)) < 500
    big = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(400)])
    torch.save(big.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match=r"and 795 more.*bare state_dict") as err:
        load_checkpoint(tmp_path / "bare.pt")
    assert len(str(err.value)) < 600


def test_resolve_model_accepts_a_module_with_a_description(described, user_nets):
    model, meta, file = resolve_model(described)
    assert model is described and file is None and meta["output_names"] == ["left_thing", "right_thing"]
    bare = user_nets.UserNet()
    with pytest.raises(ValueError, match=r"has no description: pass metadata=.*describe_model") as err:
        resolve_model(bare)
    assert len(str(err.value)) < 400
    _, meta, _ = resolve_model(bare, metadata={**meta, "default_layer": "body"})
    assert meta["default_layer"] == "body"


@pytest.fixture
def las_scan(tmp_path):
    rng = np.random.default_rng(0)
    data = np.zeros(SHAPE, np.float32)
    data[1:6, 1:7, 1:8] = rng.uniform(1, 2, size=(5, 6, 7))
    path = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(data, np.asarray(AFFINE)), path)
    labels = np.zeros(SHAPE, np.int16)
    labels[:3, 1:7, 1:8] = 53  # voxel i < 3 of an LAS grid is world x > 0: right
    labels[4:, 1:7, 1:8] = 17
    nib.save(nib.Nifti1Image(labels, np.asarray(AFFINE)), tmp_path / "sub-01_labels.nii.gz")
    (tmp_path / "lut.txt").write_text("17 Left-Hippocampus 1 2 3 0\n53 Right-Hippocampus 1 2 3 0\n")
    return path


def test_cli_explain_compare_and_cohort_accept_a_user_checkpoint(tmp_path, described, las_scan, capsys, user_nets):
    ckpt = tmp_path / "net.pt"
    save_checkpoint(ckpt, described, factory="usernets:UserNet", factory_kwargs={"width": 4})
    args = ["--model", str(ckpt), "--n-steps", "2", "--device", "cpu", "--no-progress"]
    assert main(["explain", "--image", str(las_scan), "--target", "right_thing", "--out", str(tmp_path / "ex"),
                 "--labels", str(tmp_path / "sub-01_labels.nii.gz"), "--lut", str(tmp_path / "lut.txt"),
                 *args]) == 0
    assert any((tmp_path / "ex").rglob("*right_thing*.nii.gz"))
    assert main(["cohort", "--images", str(las_scan), "--target", "all", "--out", str(tmp_path / "co"),
                 "--labels", str(tmp_path / "sub-01_labels.nii.gz"), "--lut", str(tmp_path / "lut.txt"),
                 *args]) == 0
    assert (tmp_path / "co" / "cohort_regions.csv").is_file()
    # compare, with a description that names no output_std (a KeyError on today's main, too)
    bare = user_nets.UserNet(2, 4).eval()
    describe_model(bare, input_shape=SHAPE, affine=AFFINE, output_names=["a", "b"], normalization="none")
    save_checkpoint(tmp_path / "bare.pt", bare, factory="usernets:UserNet")
    assert main(["compare", "--image", str(las_scan), "--target", "b", "--out", str(tmp_path / "cmp"),
                 "--labels", str(tmp_path / "sub-01_labels.nii.gz"), "--lut", str(tmp_path / "lut.txt"),
                 "--model", str(tmp_path / "bare.pt"), "--layer", "body", "--methods", "smocam,gradcam",
                 "--n-steps", "2", "--device", "cpu", "--no-progress"]) == 0
    # The whole module pickled: refused with a one-line hint, read with --trust-checkpoint.
    whole = tmp_path / "whole.pt"
    save_checkpoint(whole, described, trust_pickle=True)
    capsys.readouterr()
    assert main(["explain", "--image", str(las_scan), "--target", "0", "--out", str(tmp_path / "ex2"),
                 "--model", str(whole), "--n-steps", "2", "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--trust-checkpoint" in err and len(err) < 700 and err.count("\n") == 1
    assert main(["explain", "--image", str(las_scan), "--target", "0", "--out", str(tmp_path / "ex2"),
                 "--model", str(whole), "--trust-checkpoint", "--n-steps", "2", "--device", "cpu",
                 "--no-progress"]) == 0


def test_run_cohort_with_a_module_in_memory(tmp_path, described, las_scan, user_nets):
    """On today's main run_cohort(model=net) raised FileNotFoundError with the network's whole printout."""
    from captum_smocam.cohort import run_cohort

    res = run_cohort(str(las_scan), described, "all", out=tmp_path / "co", n_steps=2, device="cpu",
                     show_progress=False)
    assert res["n_failed"] == 0 and res["n_done"] == 1
    again = run_cohort(str(las_scan), described, "all", out=tmp_path / "co", n_steps=2, device="cpu",
                       show_progress=False)
    assert again["n_skipped"] == 1  # the same weights and description: complete
    with torch.no_grad():
        described.head[2].bias += 1.0
    changed = run_cohort(str(las_scan), described, "all", out=tmp_path / "co", n_steps=2, device="cpu",
                         show_progress=False)
    assert changed["n_done"] == 1  # other weights: recomputed
    with pytest.raises(ValueError, match="has no description") as err:
        run_cohort(str(las_scan), user_nets.UserNet(), "all", out=tmp_path / "co2", show_progress=False)
    assert len(str(err.value)) < 400
    assert not os.path.exists(tmp_path / "co2")
    # A bare module with its description in a JSON file.
    from captum_smocam.model_card import model_description, save_model_description

    card = save_model_description(model_description(described), tmp_path / "net.json")
    res = run_cohort(str(las_scan), user_nets.UserNet(), "left_thing", metadata=card, out=tmp_path / "co3",
                     n_steps=2, device="cpu", show_progress=False)
    assert res["n_done"] == 1 and (tmp_path / "co3" / "sub-01" / "sub-01_smocam_left-thing.nii.gz").is_file()
