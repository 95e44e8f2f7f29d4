"""SMOCAM rows of a comparison with other references: the model's own, none, built from scans."""
import numpy as np
import pytest
import torch

from captum_smocam import synth
from captum_smocam.benchmarking.variants import parse_reference_spec, smocam_variants, with_reference_inputs
from captum_smocam.models import VGG3D, set_reference_inputs
from captum_smocam.references import build_references


def test_variants_carry_their_own_references_and_leave_the_model_alone(tmp_path):
    synth.write_cohort(tmp_path / "scans", 3, seed=1, spacing=12.0, show_progress=False)
    shape, affine = synth.default_grid(12.0)
    meta = {"input_shape": [int(s) for s in shape], "affine": np.asarray(affine).tolist(),
            "intensity_normalization": "zscore_nonzero"}
    torch.manual_seed(0)
    net = set_reference_inputs(VGG3D(2, channels=(4, 8)).eval(), torch.randn(5, 1, *shape))
    own = net.reference_inputs.clone()
    rows = smocam_variants(net, meta, ["none", f"scans:{tmp_path / 'scans'}", "model"], k=2, seed=0)
    assert [v.name for v in rows] == ["smocam_norefs", "smocam_scanrefs", "smocam"]
    none, scans, model = rows
    assert model.model is net and model.references == "model: 5 reference_inputs"
    assert not hasattr(none.model, "reference_inputs")
    expected = build_references(tmp_path / "scans", meta, k=2, seed=0)
    assert torch.equal(scans.model.reference_inputs, expected.half().float())  # as a checkpoint stores them
    assert torch.equal(net.reference_inputs, own)  # the model explained is unchanged
    x = torch.randn(1, 1, *shape)
    for v in rows:  # same weights: the same predictions
        assert torch.equal(v.model(x), net(x))
    with pytest.raises(ValueError, match="given twice"):
        smocam_variants(net, meta, ["none", "none"])
    with pytest.raises(ValueError, match="unknown references 'zeros'"):
        parse_reference_spec("zeros")
    assert not hasattr(with_reference_inputs(net, None), "reference_inputs") and hasattr(net, "reference_inputs")
