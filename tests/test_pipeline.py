"""Model, target and layer resolution shared by the CLI and the cohort runner."""
import pytest
import torch

from captum_smocam.models import VGG3D, save_checkpoint
from captum_smocam.pipeline import explain, load_model, resolve_layer, resolve_targets

NAMES = ["left_hippocampus", "right_hippocampus", "left_thalamus"]


@pytest.fixture()
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = VGG3D(3, channels=(4, 8), output_mean=[3.0, 3.0, 7.0], output_std=[0.4, 0.5, 0.8]).eval()
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, model, {"output_names": NAMES, "default_layer": "features.block2"})
    return str(path)


def test_resolve_targets_forms():
    meta = {"output_names": NAMES}
    assert resolve_targets(meta, "all") == [0, 1, 2]
    assert resolve_targets(meta, "right_hippocampus") == [1]
    assert resolve_targets(meta, "2, left_hippocampus") == [2, 0]
    assert resolve_targets(meta, [1, "left_thalamus"]) == [1, 2]
    with pytest.raises(ValueError, match="'amygdala'"):
        resolve_targets(meta, "amygdala")
    with pytest.raises(ValueError, match="index 3"):
        resolve_targets(meta, "3")
    with pytest.raises(ValueError, match="no target"):
        resolve_targets(meta, " , ")


def test_load_model_and_layer(checkpoint):
    model, meta = load_model(checkpoint)
    name, layer = resolve_layer(model, meta)
    assert name == "features.block2" and layer is model.features.block2
    assert resolve_layer(model, meta, "features.block1")[1] is model.features.block1
    with pytest.raises(ValueError, match="'features.block9'"):
        resolve_layer(model, meta, "features.block9")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_model("nope.pt")


@pytest.mark.parametrize("method", ["smocam", "gradcam"])
def test_explain_several_targets_matches_one_at_a_time(checkpoint, method):
    model, meta = load_model(checkpoint)
    x = torch.randn(1, 1, 12, 14, 10)
    kw = {"smocam_kwargs": {"n_steps": 8}}
    maps = explain(model, meta, x, [2, 0], method=method, **kw)
    assert maps.shape == (2, 1, 12, 14, 10)
    one = explain(model, meta, x, [0], method=method, **kw)
    torch.testing.assert_close(maps[1:], one, rtol=1e-3, atol=1e-5)


def test_explain_takes_one_scan(checkpoint):
    model, meta = load_model(checkpoint)
    with pytest.raises(ValueError, match="one scan"):
        explain(model, meta, torch.randn(2, 1, 8, 8, 8), [0])


def test_explain_refuses_non_finite_model_outputs(checkpoint):
    """A model that predicts NaN has nothing to explain: a uniform 'mask' would be a wrong answer."""
    model, meta = load_model(checkpoint)
    with torch.no_grad():
        model.head.fc2.bias[1] = float("nan")
    x = torch.randn(1, 1, 12, 14, 10)
    for method in ("smocam", "gradcam"):
        with pytest.raises(ValueError, match=r"not finite.*right_hippocampus=nan"):
            explain(model, meta, x, [0, 1], method=method, smocam_kwargs={"n_steps": 2})
    assert explain(model, meta, x, [2], smocam_kwargs={"n_steps": 2}).shape == (1, 1, 12, 14, 10)


def test_resolve_model_returns_the_file_it_read(checkpoint):
    from pathlib import Path

    from captum_smocam.benchmarking import shipped_model_available
    from captum_smocam.pipeline import resolve_model

    model, meta, path = resolve_model(checkpoint)
    assert path == Path(checkpoint) and meta["output_names"] == NAMES and not model.training
    if shipped_model_available("vgg"):
        _, meta, path = resolve_model(None)
        assert path.name == "vgg3d_default.pt" and path.is_file() and len(meta["output_names"]) == 16


def test_smocam_settings_pass_what_was_given_and_record_what_takes_effect():
    from captum_smocam.pipeline import smocam_settings
    from captum_smocam.smocam import DEFAULT_OBJECTIVE, OBJECTIVE_DEFAULTS

    kwargs, effective = smocam_settings(None, n_steps=None, lr=None)
    assert kwargs == {"objective": DEFAULT_OBJECTIVE}
    assert effective == {**OBJECTIVE_DEFAULTS[DEFAULT_OBJECTIVE], "objective": DEFAULT_OBJECTIVE}
    kwargs, effective = smocam_settings("poster", n_steps=3, l2_weight=0.5)
    assert kwargs == {"objective": "poster", "n_steps": 3, "l2_weight": 0.5}
    assert effective == {**OBJECTIVE_DEFAULTS["poster"], "objective": "poster", "n_steps": 3, "l2_weight": 0.5}
    with pytest.raises(ValueError, match="'preserve' objective has no setting l2_weight"):
        smocam_settings("preserve", l2_weight=1.0)
    with pytest.raises(ValueError, match="unknown objective 'mean'"):
        smocam_settings("mean")
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
            smocam_settings("poster", n_steps=bad)


def test_resolve_device():
    from captum_smocam.pipeline import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="is_available"):
            resolve_device("cuda")
