"""Tests of captum_smocam.models: shapes, cm³ outputs, checkpoints, shipped weights."""
import importlib.resources
import os
import pickle

import pytest
import torch

from captum_smocam import models
from captum_smocam.models import (
    METADATA_KEYS,
    AlexNet3D,
    VGG3D,
    build_model,
    load_checkpoint,
    load_default_model,
    save_checkpoint,
)

SHAPE = (7, 8, 9)  # non-cubic: swapped axes change the shapes below


def _tiny(arch, n_outputs=3, **kw):
    torch.manual_seed(0)
    if arch == "vgg":
        return VGG3D(n_outputs, channels=(2, 3, 4), hidden=5, **kw)
    return AlexNet3D(n_outputs, channels=(2, 3, 4), kernel_sizes=(3, 3), hidden=5, **kw)


@pytest.mark.parametrize("arch", ["vgg", "alexnet"])
def test_output_shape_any_input_size(arch):
    model = _tiny(arch).eval()
    for shape in (SHAPE, (12, 10, 11)):
        assert model(torch.randn(2, 1, *shape)).shape == (2, 3)


@pytest.mark.parametrize("arch", ["vgg", "alexnet"])
def test_spatial_pool_keeps_position(arch, tmp_path):
    model = _tiny(arch, pool_size=(2, 1, 1)).eval()
    assert model.head.fc1.in_features == 4 * 2
    assert model(torch.randn(2, 1, 16, 9, 10)).shape == (2, 3)
    assert _tiny(arch).pool_size == (1, 1, 1)
    save_checkpoint(tmp_path / "p.pt", model)
    loaded, meta = load_checkpoint(tmp_path / "p.pt")
    assert meta["arch_kwargs"]["pool_size"] == [2, 1, 1]
    x = torch.randn(1, 1, *SHAPE)
    assert torch.equal(model(x), loaded(x))
    with pytest.raises(ValueError, match="pool_size"):
        _tiny(arch, pool_size=(2, 0, 1))


def test_vgg_block_resolutions_and_names():
    model = VGG3D(2, channels=(2, 3, 4, 5)).eval()
    seen = {}
    hooks = [
        model.get_submodule(f"features.block{k}").register_forward_hook(
            lambda m, i, o, k=k: seen.__setitem__(k, tuple(o.shape))
        )
        for k in range(1, 5)
    ]
    model(torch.randn(1, 1, 16, 18, 20))
    for h in hooks:
        h.remove()
    # block1 keeps full resolution; each later block pools first.
    assert seen == {1: (1, 2, 16, 18, 20), 2: (1, 3, 8, 9, 10), 3: (1, 4, 4, 4, 5), 4: (1, 5, 2, 2, 2)}
    assert model.default_layer == "features.block3"


def test_alexnet_layer_names_and_strides():
    model = AlexNet3D(2, channels=(2, 3, 4)).eval()
    out = {}
    for name in ("features.conv1", "features.conv2", "features.conv3"):
        model.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: out.__setitem__(name, tuple(o.shape[2:]))
        )
    model(torch.randn(1, 1, 32, 40, 48))
    assert out == {
        "features.conv1": (16, 20, 24),
        "features.conv2": (8, 10, 12),
        "features.conv3": (4, 5, 6),
    }
    model.get_submodule(model.default_layer)


def test_rebsamen_configuration_has_the_papers_layer_sizes_at_256():
    """Rebsamen et al. (2020): 11³/3 x144 -> pool -> 5³/2 x192 -> pool -> 3³ x192 -> pool -> FC 384 -> 192 -> 165."""
    with torch.device("meta"):  # shapes without computing (or allocating) anything
        model = models.rebsamen_alexnet3d().eval()
        out = {}
        for name, _ in model.features.named_children():
            model.features.get_submodule(name).register_forward_hook(
                lambda m, i, o, name=name: out.__setitem__(name, tuple(o.shape[1:])))
        y = model(torch.empty(2, 1, 256, 256, 256))
    assert out == {"conv1": (144, 82, 82, 82), "pool1": (144, 40, 40, 40), "conv2": (192, 18, 18, 18),
                   "pool2": (192, 8, 8, 8), "conv3": (192, 8, 8, 8), "pool3": (192, 3, 3, 3)}
    conv1, conv2 = model.features.conv1[0], model.features.conv2[0]
    assert (conv1.kernel_size, conv1.stride) == ((11,) * 3, (3,) * 3)
    assert (conv2.kernel_size, conv2.stride) == ((5,) * 3, (2,) * 3)
    assert [m.out_features for m in model.head if isinstance(m, torch.nn.Linear)] == [384, 192, 165]
    assert tuple(y.shape) == (2, 165) and model.default_layer == "features.conv2"


def test_rebsamen_configuration_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = models.rebsamen_alexnet3d(4, channels=(2, 3, 4), hidden=(5, 6)).eval()  # small widths, same layout
    x = torch.randn(1, 1, 113, 113, 113)  # the least input the layout takes (3³ after pool3)
    save_checkpoint(tmp_path / "r.pt", model, {"output_names": list("abcd")})
    loaded, meta = load_checkpoint(tmp_path / "r.pt")
    assert meta["arch_kwargs"]["strides"] == [3, 2] and meta["arch_kwargs"]["pool3"] is True
    assert torch.equal(loaded(x), model(x))


def test_default_alexnet_checkpoint_metadata_is_unchanged_by_the_new_settings(tmp_path):
    written = save_checkpoint(tmp_path / "a.pt", _tiny("alexnet"), {"output_names": list("abc")})
    assert set(written["arch_kwargs"]) == {"n_outputs", "in_channels", "channels", "kernel_sizes", "hidden",
                                           "dropout", "pool_size"}


@pytest.mark.parametrize("arch", ["vgg", "alexnet"])
def test_outputs_are_destandardised(arch):
    mean, std = [100.0, 2.0, 30.0], [10.0, 0.5, 3.0]
    model = _tiny(arch, output_mean=mean, output_std=std).eval()
    x = torch.randn(4, 1, *SHAPE)
    z = model.forward_standardized(x)
    y = model(x)
    torch.testing.assert_close(y, z * torch.tensor(std) + torch.tensor(mean))
    torch.testing.assert_close(model.standardize(y), z)
    # buffers, saved in state_dict
    sd = model.state_dict()
    assert sd["output_mean"].tolist() == mean and sd["output_std"].tolist() == std
    assert "output_mean" not in dict(model.named_parameters())


def test_bad_arguments_raise_with_value():
    with pytest.raises(ValueError, match="-1"):
        VGG3D(-1)
    with pytest.raises(ValueError, match="output_std"):
        VGG3D(2, output_std=[1.0, 0.0])
    with pytest.raises(ValueError, match="n_outputs=2 entries, got 3"):
        VGG3D(2, output_mean=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"\(1, 2, 7, 8, 9\)"):
        _tiny("vgg")(torch.randn(1, 2, *SHAPE))
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        AlexNet3D(2, kernel_sizes=(2, 4))
    with pytest.raises(ValueError, match="ResNet"):
        build_model("ResNet", {})


@pytest.mark.parametrize("arch", ["vgg", "alexnet"])
def test_checkpoint_round_trip(tmp_path, arch):
    model = _tiny(arch, output_mean=[5.0, 6.0, 7.0], output_std=[1.0, 2.0, 3.0])
    # make BatchNorm running statistics non-trivial
    model.train()
    with torch.no_grad():
        model(torch.randn(3, 1, *SHAPE))
    model.eval()
    path = tmp_path / "m.pt"
    meta_in = {"output_names": ["a", "b", "c"], "splits": {"train": (0, 10)}, "input_shape": SHAPE}
    written = save_checkpoint(path, model, meta_in)
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    assert type(loaded) is type(model)
    x = torch.randn(2, 1, *SHAPE)
    assert torch.equal(model(x), loaded(x))
    assert meta == written
    assert meta["arch"] == type(model).__name__
    assert meta["output_mean"] == [5.0, 6.0, 7.0]
    assert meta["splits"] == {"train": [0, 10]}  # tuples stored as lists
    assert meta["default_layer"] == model.default_layer
    assert os.listdir(tmp_path) == ["m.pt"]  # the temporary file was renamed, nothing left beside it


def test_checkpoint_metadata_subclasses_become_builtins(tmp_path):
    # numpy scalars and torch.__version__ (a str subclass) would make weights_only loading fail
    np = pytest.importorskip("numpy")
    meta = {"torch": torch.__version__, "r": np.float64(0.5), "n": np.int64(3), "ok": np.bool_(True)}
    save_checkpoint(tmp_path / "m.pt", _tiny("vgg"), meta)
    _, loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded["torch"] == str(torch.__version__) and type(loaded["torch"]) is str
    assert loaded["r"] == 0.5 and type(loaded["r"]) is float
    assert loaded["n"] == 3 and type(loaded["n"]) is int
    assert loaded["ok"] is True


def test_checkpoint_rejects_non_plain_metadata(tmp_path):
    with pytest.raises(TypeError, match="Tensor"):
        save_checkpoint(tmp_path / "m.pt", _tiny("vgg"), {"x": torch.zeros(1)})
    with pytest.raises(ValueError, match="2 names"):
        save_checkpoint(tmp_path / "m.pt", _tiny("vgg"), {"output_names": ["a", "b"]})
    assert not (tmp_path / "m.pt").exists()


_CALLED = []


def _mark(message):
    _CALLED.append(message)
    return message


class _Evil:
    """Unpickling this object would call a function of the attacker's choice."""

    def __reduce__(self):
        return (_mark, ("code ran",))


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    model = _tiny("vgg")
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": model.state_dict(), "metadata": {"format_version": 1, "x": _Evil()}}, path)
    # the file really does run code when unpickled without weights_only
    torch.load(path, weights_only=False)
    assert _CALLED == ["code ran"]
    _CALLED.clear()
    with pytest.raises(ValueError, match="refusing to load"):
        load_checkpoint(path)
    assert _CALLED == []


def test_tampered_checkpoints_are_refused(tmp_path):
    model = _tiny("vgg")
    good = tmp_path / "good.pt"
    save_checkpoint(good, model)
    blob = torch.load(good, weights_only=True)

    bad = dict(blob, metadata=dict(blob["metadata"], format_version=99))
    torch.save(bad, tmp_path / "v.pt")
    with pytest.raises(ValueError, match="99"):
        load_checkpoint(tmp_path / "v.pt")

    sd = dict(blob["state_dict"])
    sd["head.fc2.weight"] = torch.zeros(7, 7)
    torch.save({"state_dict": sd, "metadata": blob["metadata"]}, tmp_path / "w.pt")
    with pytest.raises(ValueError, match="do not match"):
        load_checkpoint(tmp_path / "w.pt")

    torch.save([1, 2], tmp_path / "l.pt")
    with pytest.raises(ValueError, match="not a captum_smocam checkpoint"):
        load_checkpoint(tmp_path / "l.pt")

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")

    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_load_default_model_unknown_name():
    with pytest.raises(ValueError, match="resnet"):
        load_default_model("resnet")


def _shipped(name):
    return (importlib.resources.files("captum_smocam") / "data" / models.DEFAULT_MODELS[name]).is_file()


@pytest.mark.parametrize("name", sorted(models.DEFAULT_MODELS))
def test_shipped_model(name):
    if not _shipped(name):
        pytest.skip(f"{models.DEFAULT_MODELS[name]} not trained yet (benchmarks/train.py)")
    if name.startswith("monai"):
        pytest.importorskip("monai")
    path = importlib.resources.files("captum_smocam") / "data" / models.DEFAULT_MODELS[name]
    assert os.path.getsize(path) <= 10 * 1024 * 1024
    model, meta = load_default_model(name)
    assert not model.training
    keys = [("factory_kwargs" if k == "arch_kwargs" and meta.get("arch") == "factory" else k) for k in METADATA_KEYS]
    missing = [k for k in keys if k not in meta]
    assert missing == []
    assert meta["output_units"] == "cm3"
    assert meta["intensity_normalization"] == "zscore_nonzero"
    assert len(meta["output_names"]) == model.n_outputs == len(meta["output_std"])
    assert torch.allclose(model.output_std, torch.tensor(meta["output_std"]))
    assert len(meta["affine"]) == 4 and all(len(r) == 4 for r in meta["affine"])
    (a, b), (c, d), (e, f) = (meta["splits"][k] for k in ("train", "val", "test"))
    assert b <= c and d <= e  # disjoint, ordered subject index ranges
    model.get_submodule(meta["default_layer"])
    for key in ("left_hippocampus", "right_hippocampus"):
        assert set(meta["test_metrics"][key]) >= {"r2", "mae_cm3"}
    # a blank image of the training size gives finite volumes in cm³
    with torch.no_grad():
        y = model(torch.zeros(1, 1, *meta["input_shape"]))
    assert y.shape == (1, model.n_outputs) and torch.isfinite(y).all()


def test_unreadable_checkpoints_say_what_the_file_is(tmp_path):
    """Each way a file can fail to be a checkpoint gets its own message, never an empty one."""
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt.*empty \(0 bytes\)"):
        load_checkpoint(empty)

    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(range(231, 256)) * 80)  # random-looking bytes: not a pickle, not a zip
    with pytest.raises(ValueError, match="not a PyTorch checkpoint") as err:
        load_checkpoint(noise)
    assert "could run code" not in str(err.value)

    text = tmp_path / "text.pt"
    text.write_text("hello world\n")  # torch.load raises KeyError('101') on this
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_checkpoint(text)

    truncated = tmp_path / "truncated.pt"
    save_checkpoint(truncated, _tiny("vgg"))
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"truncated\.pt.*(corrupt|truncated)"):
        load_checkpoint(truncated)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch deprecates torch.jit; users still have such files
@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_file_is_refused_with_the_reason(tmp_path, how):
    # A network of the user's own, scripted or traced as torch.jit.save expects.
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten()).eval()
    scripted = torch.jit.script(model) if how == "script" else torch.jit.trace(model, torch.randn(1, 1, *SHAPE))
    path = tmp_path / "ts.pt"
    torch.jit.save(scripted, path)
    with pytest.raises(ValueError, match="TorchScript") as err:
        load_checkpoint(path)
    assert "hooks" in str(err.value) and "save_checkpoint" in str(err.value)


def test_absurd_architecture_sizes_are_refused_before_allocating(tmp_path):
    """channels 200000 would allocate terabytes while building the model: refuse from the shapes alone."""
    good = tmp_path / "good.pt"
    save_checkpoint(good, _tiny("vgg"))
    blob = torch.load(good, weights_only=True)
    meta = dict(blob["metadata"], arch_kwargs=dict(blob["metadata"]["arch_kwargs"], channels=[200000, 200000, 4]))
    torch.save({"state_dict": blob["state_dict"], "metadata": meta}, tmp_path / "absurd.pt")
    with pytest.raises(ValueError, match="200000") as err:
        load_checkpoint(tmp_path / "absurd.pt")
    assert "parameters" in str(err.value)

    # Within the bound but not what the file holds: the first mismatching tensor is named.
    meta = dict(blob["metadata"], arch_kwargs=dict(blob["metadata"]["arch_kwargs"], channels=[2, 3, 5]))
    torch.save({"state_dict": blob["state_dict"], "metadata": meta}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"do not match.*features\.block3"):
        load_checkpoint(tmp_path / "other.pt")

    meta = dict(blob["metadata"], arch_kwargs="not a dict")
    torch.save({"state_dict": blob["state_dict"], "metadata": meta}, tmp_path / "kw.pt")
    with pytest.raises(ValueError, match="arch_kwargs"):
        load_checkpoint(tmp_path / "kw.pt")


def _tampered(tmp_path, name, **changes):
    """A checkpoint of a tiny VGG3D with 3 outputs whose metadata is edited after saving."""
    good = tmp_path / "good.pt"
    save_checkpoint(good, _tiny("vgg"), {"output_names": ["a", "b", "c"], "input_shape": [7, 8, 9]})
    blob = torch.load(good, weights_only=True)
    meta = dict(blob["metadata"])
    for key, value in changes.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    torch.save({"state_dict": blob["state_dict"], "metadata": meta}, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"output_names": ["a", "b"]}, r"output_names'\] has 2 names but the model has 3 outputs"),
        ({"output_names": ["a", "b", "a"]}, r"output_names'\] repeats 'a'"),
        ({"output_names": ["a", "b", 3]}, r"output_names'\] must be a list of non-empty str"),
        ({"output_std": [1.0, 1.0]}, r"output_std'\] has 2 values but the model has 3 outputs"),
        ({"output_std": [2.0, 1.0, 1.0]}, r"output_std'\] .* differs from the model's"),
        ({"default_layer": "features.block9"}, r"default_layer'\] 'features.block9' is not a layer"),
        ({"input_shape": [7, 8]}, r"input_shape'\] must be 3 positive ints"),
        ({"affine": [[1, 0], [0, 1]]}, r"affine'\] must be an invertible 4 x 4"),
        ({"intensity_normalization": "minmax"}, r"intensity_normalization'\] 'minmax'"),
    ],
)
def test_metadata_inconsistent_with_the_model_is_refused_at_load(tmp_path, changes, message):
    path = _tampered(tmp_path, "bad.pt", **changes)
    with pytest.raises(ValueError, match=message) as err:
        load_checkpoint(path)
    assert "bad.pt" in str(err.value)


def test_non_finite_weights_are_refused_at_load(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, _tiny("vgg"))
    blob = torch.load(good, weights_only=True)
    blob["state_dict"]["head.fc2.bias"][1] = float("nan")
    torch.save(blob, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match=r"head\.fc2\.bias has 1 NaN or Inf"):
        load_checkpoint(tmp_path / "nan.pt")


def test_load_model_needs_output_names(tmp_path):
    from captum_smocam.pipeline import load_model

    path = _tampered(tmp_path, "nameless.pt", output_names=None)
    load_checkpoint(path)  # a checkpoint may leave its outputs unnamed ...
    with pytest.raises(ValueError, match=r"nameless\.pt.*no metadata\['output_names'\]"):
        load_model(str(path))  # ... but the smocam command names files and tables after them


def test_save_checkpoint_looks_through_dataparallel(tmp_path):
    """A model wrapped for multi-GPU training is saved as the model it wraps, loadable by smocam."""
    model = _tiny("vgg").eval()
    save_checkpoint(tmp_path / "dp.pt", torch.nn.DataParallel(model), {"output_names": ["a", "b", "c"]})
    loaded, meta = load_checkpoint(tmp_path / "dp.pt")
    x = torch.randn(1, 1, *SHAPE)
    assert meta["arch"] == "VGG3D" and torch.equal(model(x), loaded(x))


def test_reference_inputs_round_trip_and_are_validated(tmp_path):
    from captum_smocam.models import set_reference_inputs

    model = VGG3D(2, channels=(4, 8)).eval()
    refs = torch.randn(3, 1, 8, 10, 9)
    set_reference_inputs(model, refs)
    assert "reference_inputs" not in model.state_dict()  # the weights stay the weights
    path = tmp_path / "m.pt"
    meta = save_checkpoint(path, model, {"output_names": ["a", "b"]})
    assert meta["n_reference_inputs"] == 3
    loaded, meta2 = load_checkpoint(path)
    assert torch.equal(loaded.reference_inputs, refs)  # float32 where float16 would round them
    assert meta2["n_reference_inputs"] == 3
    set_reference_inputs(loaded, None)
    assert not hasattr(loaded, "reference_inputs")
    save_checkpoint(path, loaded)
    assert not hasattr(load_checkpoint(path)[0], "reference_inputs")
    for bad, match in ((torch.randn(3, 2, 8, 10, 9), "K x 1"), (torch.randn(0, 1, 4, 4, 4), "K x 1"),
                       (torch.full((1, 1, 4, 4, 4), float("nan")), "NaN"), (torch.ones(1, 1, 4, 4, 4).long(), "float")):
        with pytest.raises((ValueError, TypeError), match=match):
            set_reference_inputs(model, bad)


@pytest.mark.parametrize("arch", ["vgg", "alexnet"])
def test_traced_by_torch_fx_while_real_inputs_stay_checked(arch):
    """torch.fx traces the models (SMOCAM's fast path) with no fx-specific code in them; real inputs are checked."""
    model = _tiny(arch).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 1, *SHAPE)
    assert torch.equal(traced(x), model(x))
    with pytest.raises(TypeError, match="expected a torch.Tensor, got list"):
        model([[0.0]])
    with pytest.raises(ValueError, match=r"N x 1 x X x Y x Z, got \(2, 2, 7, 8, 9\)"):
        model(torch.randn(2, 2, *SHAPE))


def test_a_new_architecture_is_one_class_that_declares_its_config(tmp_path):
    """@register_architecture and arch_kwargs() are all a new architecture needs to be checkpointed by name."""
    from collections import OrderedDict

    from torch import nn

    from captum_smocam.models import ARCHITECTURES
    from captum_smocam.models.base import VolumeRegressor
    from captum_smocam.models.registry import register_architecture

    class TinyNet3D(VolumeRegressor):
        default_layer = "features.conv"

        def __init__(self, n_outputs, in_channels=1, channels=(3,), output_mean=None, output_std=None):
            super().__init__()
            self._check_sizes(n_outputs, in_channels, 4, 1)
            self.channels = tuple(channels)
            self.features = nn.Sequential(OrderedDict(conv=nn.Conv3d(in_channels, self.channels[0], 3, padding=1)))
            self._add_pool_and_head(self.channels[0], 4)
            self._init_output_stats(self.n_outputs, output_mean, output_std)

        def arch_kwargs(self):
            return self._shared_kwargs()

    register_architecture(TinyNet3D)
    try:
        torch.manual_seed(0)
        net = TinyNet3D(2, channels=(5,), output_std=[2.0, 3.0]).eval()
        meta = save_checkpoint(tmp_path / "t.pt", net, {"output_names": ["a", "b"]})
        assert meta["arch"] == "TinyNet3D" and meta["arch_kwargs"] == {"n_outputs": 2, "in_channels": 1,
                                                                       "channels": [5]}
        loaded, _ = load_checkpoint(tmp_path / "t.pt")
        x = torch.randn(1, 1, *SHAPE)
        assert type(loaded) is TinyNet3D and torch.equal(loaded(x), net(x))
        with pytest.raises(ValueError, match="'TinyNet3D' is already taken"):
            register_architecture(type("TinyNet3D", (VolumeRegressor,), {}))
    finally:
        ARCHITECTURES.pop("TinyNet3D", None)
    with pytest.raises(TypeError, match="must be a VolumeRegressor subclass"):
        register_architecture(nn.Linear)


def test_reference_inputs_and_sigma_are_read_through_accessors(tmp_path):
    """get_reference_inputs / get_output_std read what a model carries, through wrappers and checkpoints."""
    from captum_smocam import describe_model
    from captum_smocam.models import get_output_std, get_reference_inputs, set_reference_inputs

    model = VGG3D(2, channels=(4, 8), output_std=[2.0, 0.5]).eval()
    assert get_reference_inputs(model) is None
    refs = torch.randn(3, 1, 8, 10, 9)
    set_reference_inputs(torch.nn.DataParallel(model), refs)
    assert torch.equal(get_reference_inputs(torch.nn.DataParallel(model)), refs)
    assert torch.equal(get_output_std(torch.nn.DataParallel(model)), torch.tensor([2.0, 0.5]))
    save_checkpoint(tmp_path / "m.pt", model, {"output_names": ["a", "b"]})
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    assert torch.equal(get_reference_inputs(loaded), refs) and meta["output_std"] == [2.0, 0.5]
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten())
    assert get_output_std(net) is None and get_output_std(lambda x: x) is None
    describe_model(net, input_shape=(8, 10, 9), spacing=2.0, normalization="none", output_names=["a", "b"],
                   output_std=[0.25, 4.0], default_layer="0")
    std = get_output_std(net)
    assert std.dtype == torch.float64 and std.tolist() == [0.25, 4.0]
