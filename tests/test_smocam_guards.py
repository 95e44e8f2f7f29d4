"""SMOCAM never returns a silent wrong answer: half precision, empty references, broken references, meta tensors."""
import pytest
import torch

from captum_smocam.models import VGG3D, load_checkpoint, save_checkpoint, set_reference_inputs
from captum_smocam.smocam import SMOCAM

SHAPE = (10, 12, 14)


def _model():
    torch.manual_seed(0)
    return VGG3D(2, channels=(4, 8)).eval()


def _x(seed=2):
    return torch.randn(1, 1, *SHAPE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("objective", ["preserve", "poster"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_refused_in_one_line(objective, dtype):
    """Before: dtype=torch.float16 gave an all-zero (preserve) or all-NaN (poster) mask, no error."""
    model = _model()
    with pytest.raises(ValueError) as info:
        SMOCAM(model, model.features.block2).attribute(_x(), target=0, n_steps=3, objective=objective, dtype=dtype)
    message = str(info.value)
    assert str(dtype) in message and "float32" in message and len(message.splitlines()) == 1


def test_a_half_precision_model_is_refused_too():
    model = _model().half()
    with pytest.raises(ValueError, match="torch.float16.*dtype=torch.float32"):
        SMOCAM(model, model.features.block2).attribute(_x().half(), target=0, n_steps=3)


def test_a_mask_with_nan_is_never_returned(monkeypatch):
    model = _model()
    from captum_smocam.smocam import attribution

    monkeypatch.setattr(attribution, "_explain", lambda *a, **k: torch.full((1, 1, 5, 6, 7), float("nan")))
    with pytest.raises(ValueError, match="NaN or Inf"):
        SMOCAM(model, model.features.block2).attribute(_x(), target=0, n_steps=3)


@pytest.mark.parametrize("how", ["baselines", "reference_inputs"])
def test_references_equal_to_the_scan_warn(how):
    """Before: baselines identical to the scan gave a uniform, empty mask without a word."""
    model = _model()
    x = _x()
    kwargs = {"baselines": x[0]} if how == "baselines" else {}
    if how == "reference_inputs":
        set_reference_inputs(model, x.repeat(2, 1, 1, 1, 1))
    with pytest.warns(UserWarning, match="baselines.*cannot show anything"):
        SMOCAM(model, model.features.block2).attribute(x, target=0, n_steps=3, **kwargs)


def test_references_that_differ_do_not_warn(recwarn):
    model = _model()
    SMOCAM(model, model.features.block2).attribute(_x(), target=0, n_steps=3, baselines=_x(3)[0])
    assert not [w for w in recwarn if "cannot show anything" in str(w.message)]


def test_reference_scans_load_back_exactly(tmp_path):
    """Before: values above 65504 were stored as float16 Inf and the file written could not be loaded."""
    model = _model()
    refs = torch.randn(2, 1, *SHAPE, generator=torch.Generator().manual_seed(1)) * 1e5
    set_reference_inputs(model, refs)
    save_checkpoint(tmp_path / "m.pt", model, {"output_names": ["a", "b"], "input_shape": list(SHAPE)})
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    assert torch.equal(loaded.reference_inputs, refs)
    exact = (refs / 1e5).half().float()  # values float16 holds exactly: stored as float16 (half the size)
    set_reference_inputs(model, exact)
    save_checkpoint(tmp_path / "h.pt", model)
    assert torch.load(tmp_path / "h.pt")["reference_inputs"].dtype == torch.float16
    assert torch.equal(load_checkpoint(tmp_path / "h.pt")[0].reference_inputs, exact)


def test_a_checkpoint_whose_references_do_not_fit_its_input_shape_is_not_written(tmp_path):
    model = _model()
    set_reference_inputs(model, torch.zeros(1, 1, *SHAPE))
    with pytest.raises(ValueError, match="input_shape"):
        save_checkpoint(tmp_path / "m.pt", model, {"input_shape": [9, 9, 9]})
    assert not (tmp_path / "m.pt").exists()


def test_broken_reference_inputs_are_named_as_the_models():
    """Before: "baselines for input 0 ..." although the user passed no baselines."""
    model = _model()
    set_reference_inputs(model, torch.zeros(2, 1, *SHAPE))
    model.reference_inputs[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="the model's reference_inputs are not finite") as info:
        SMOCAM(model, model.features.block2).attribute(_x(), target=0, n_steps=3)
    assert "baselines for input" not in str(info.value)
    model.reference_inputs = torch.zeros(2, 1, 9, 9, 9)
    with pytest.raises(ValueError, match=r"the model's reference_inputs have shape \(2, 1, 9, 9, 9\)"):
        SMOCAM(model, model.features.block2).attribute(_x(), target=0, n_steps=3)


def test_an_input_of_the_wrong_size_names_both_sizes():
    """A plain 8^3 input into a model whose reference scans are 10 x 12 x 14."""
    model = _model()
    set_reference_inputs(model, torch.zeros(2, 1, *SHAPE))
    with pytest.raises(ValueError) as info:
        SMOCAM(model, model.features.block2).attribute(torch.randn(1, 1, 8, 8, 8), target=0, n_steps=3)
    message = str(info.value)
    assert "(1, 8, 8, 8)" in message and "(1, 10, 12, 14)" in message and "baselines for input" not in message


def test_meta_tensors_are_a_one_line_error():
    model = _model()
    with pytest.raises(ValueError, match="meta device") as info:
        SMOCAM(model, model.features.block2).attribute(_x(), target=0, n_steps=3,
                                                       baselines=torch.zeros(1, *SHAPE, device="meta"))
    assert "cpu" in str(info.value) and len(str(info.value).splitlines()) == 1
    with pytest.raises(ValueError, match="meta device"):
        SMOCAM(model, model.features.block2).attribute(torch.zeros(1, 1, *SHAPE, device="meta"), target=0)
