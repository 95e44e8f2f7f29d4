"""A model's identity for the caches (edits through .data included) and the module inside its wrappers."""
import pytest
import torch
from torch import nn

from captum_smocam import fastpath
from captum_smocam.smocam import references, runners
from captum_smocam._model_state import module_fingerprint, state_fingerprint, unwrap_model
from captum_smocam.models import VGG3D, save_checkpoint, set_reference_inputs
from captum_smocam.smocam import SMOCAM

SHAPE = (10, 12, 14)


def _model(seed=0):
    torch.manual_seed(seed)
    return VGG3D(2, channels=(4, 8)).eval()


def _forget_everything():
    fastpath.clear_cache()
    runners._DTYPE_COPIES.clear()
    references._REFERENCE_FEATURES.clear()


def test_fingerprint_sees_edits_through_data():
    net = nn.Linear(3, 2)
    before = state_fingerprint(net)
    assert before == state_fingerprint(net)
    version = net.weight._version
    net.weight.data.mul_(2.0)
    assert net.weight._version == version  # what the version counter alone misses
    assert state_fingerprint(net) != before
    assert module_fingerprint(net) != module_fingerprint(nn.Linear(3, 2))


@pytest.mark.parametrize("objective,refs", [("poster", False), ("preserve", True), ("preserve", False)])
def test_a_weight_changed_through_data_gives_a_fresh_mask(objective, refs):
    """Before: the poster's float64 copy and the references' features were reused after `p.data.mul_(2)`."""
    model = _model()
    if refs:
        set_reference_inputs(model, torch.randn(3, 1, *SHAPE, generator=torch.Generator().manual_seed(1)))
    x = torch.randn(1, 1, *SHAPE, generator=torch.Generator().manual_seed(2))

    def run(m):
        return SMOCAM(m, m.features.block2).attribute(x, target=0, n_steps=8, objective=objective)

    first = run(model)
    assert torch.equal(run(model), first)  # caches in use: the same answer
    with torch.no_grad():
        model.features.block1[0].weight.data.mul_(2.0)  # EMA / weight surgery: no version bump
    second = run(model)
    _forget_everything()
    fresh = run(model)
    assert torch.equal(second, fresh) and not torch.equal(second, first)


def test_wrappers_are_unwrapped_the_same_way_everywhere(tmp_path):
    model = _model()
    assert unwrap_model(nn.DataParallel(nn.DataParallel(model))) is model
    assert unwrap_model(torch.compile(model)) is model  # compiled lazily: nothing runs here
    assert unwrap_model(len) is len
    set_reference_inputs(nn.DataParallel(model), torch.zeros(2, 1, *SHAPE))  # reaches the module inside
    assert model.reference_inputs.shape[0] == 2
    assert save_checkpoint(tmp_path / "m.pt", torch.compile(model))["n_reference_inputs"] == 2


def test_data_parallel_model_uses_its_reference_inputs():
    """Before: nn.DataParallel hid `reference_inputs` and shifted copies were used in silence."""
    model = _model()
    set_reference_inputs(model, torch.randn(3, 1, *SHAPE, generator=torch.Generator().manual_seed(1)))
    x = torch.randn(1, 1, *SHAPE, generator=torch.Generator().manual_seed(2))
    plain = SMOCAM(model, model.features.block2).attribute(x, target=0, n_steps=8)
    wrapped = SMOCAM(nn.DataParallel(model), model.features.block2).attribute(x, target=0, n_steps=8)
    assert torch.equal(plain, wrapped)
