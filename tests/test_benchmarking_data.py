"""Tests of captum_smocam.benchmarking.data: models, subjects, structures, splits and the training cache."""
from pathlib import Path

import numpy as np
import pytest
import torch

from captum_smocam import synth
from captum_smocam.benchmarking import data as D

SPLITS = {"train": [0, 480], "val": [10000, 10060], "test": [20000, 20100]}
META = {"lr_correlation": 0.95, "intensity_normalization": "zscore_nonzero", "spacing_mm": 12.0, "splits": SPLITS}


def test_untrained_model_has_the_shipped_architecture_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    net, meta = D.untrained_model(seed=1)
    assert torch.equal(torch.rand(1), expected_next)  # fork_rng: the caller's random stream is untouched
    again, _ = D.untrained_model(seed=1)
    other, _ = D.untrained_model(seed=2)
    w = net.features.block1[0].weight
    assert torch.equal(w, again.features.block1[0].weight)
    assert not torch.equal(w, other.features.block1[0].weight)
    assert not net.training and meta["output_names"] == list(synth.STRUCTURE_NAMES)
    x = torch.randn(1, 1, *meta["input_shape"])
    with torch.no_grad():
        pred = net(x)[0]
    template = synth.template_volumes()
    assert torch.allclose(net.output_mean, torch.tensor([template[n] for n in synth.STRUCTURE_NAMES]))
    assert bool((pred > 0).all())  # plausible volumes: around the template, sd 10 %
    if D.shipped_model_available("vgg"):  # the same layers and sizes as the shipped weights
        shipped, _ = D.load_model("vgg")
        assert [(n, p.shape) for n, p in shipped.state_dict().items()] == \
            [(n, p.shape) for n, p in net.state_dict().items()]


def test_load_model_resolves_untrained_shipped_names_and_checkpoint_files(tmp_path):
    from captum_smocam.models import save_checkpoint

    net, meta = D.load_model("untrained")
    path = tmp_path / "m.pt"
    save_checkpoint(path, net, meta)
    loaded, loaded_meta = D.load_model(str(path))
    x = torch.randn(1, 1, 16, 20, 18)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    assert loaded_meta["output_names"] == meta["output_names"] and not loaded.training
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        D.load_model("no_such_model")
    assert D.shipped_model_available("no_such_model") is False


def test_load_subject_normalises_and_follows_the_cohort_and_overrides():
    x, s = D.load_subject(3, META)
    assert x.shape == (1, 1, *s.labels.shape) and x.dtype == torch.float32
    brain = s.image > 0
    assert abs(float(x[0, 0].numpy()[brain].mean())) < 1e-3  # zscore over the non-zero voxels
    same = synth.generate_subject(3, spacing=12.0, lr_correlation=0.95)
    assert s.volumes == same.volumes
    _, independent = D.load_subject(3, META, lr_correlation=0.0)
    assert independent.volumes != s.volumes
    _, other_seed = D.load_subject(3, {**META, "cohort_seed": 1})
    assert other_seed.volumes != s.volumes
    _, bigger = D.load_subject(3, META, overrides={"left_hippocampus": 1.5})
    assert bigger.volumes["left_hippocampus"] > 1.3 * s.volumes["left_hippocampus"]


def test_structure_mask_contralateral_spacing_and_splits():
    _, s = D.load_subject(0, META)
    for value, name in synth.LABELS.items():
        np.testing.assert_array_equal(D.structure_mask(s, name), s.labels == value)
    with pytest.raises(ValueError, match="'hippocampus'"):
        D.structure_mask(s, "hippocampus")
    assert D.contralateral("left_hippocampus") == "right_hippocampus"
    assert D.contralateral("right_lateral_ventricle") == "left_lateral_ventricle"
    assert D.contralateral("brainstem") is None
    assert D.voxel_spacing(s) == (12.0, 12.0, 12.0)
    assert D.split_indices(META, "val") == list(range(10000, 10060))
    assert D.split_indices(META, "test", 2) == [20000, 20001]
    with pytest.raises(ValueError, match="101 test subjects"):
        D.split_indices(META, "test", 101)
    with pytest.raises(ValueError, match="'holdout'"):
        D.split_indices(META, "holdout", 1)


def test_cohort_volumes_equal_generate_subject_volumes():
    for index, r in ((3, 0.95), (5, 0.0)):
        full = synth.generate_subject(index, lr_correlation=r).volumes
        fast = D.cohort_volumes(index, r, 0)
        assert set(fast) == set(synth.STRUCTURE_NAMES)
        assert max(abs(full[k] - fast[k]) for k in full) < 1e-9
    # the cohort correlation is passed on: it changes the right side's draw
    a, b = D.cohort_volumes(3, 0.95, 0), D.cohort_volumes(3, 0.0, 0)
    assert abs(a["right_hippocampus"] - b["right_hippocampus"]) > 1e-3


def test_cache_stem_names_everything_that_changes_the_data(tmp_path):
    base = D.cache_stem(tmp_path, 0, 400, 0.95, 3.0, 0)
    assert base.parent == tmp_path and base.name.startswith("cohort_r0.95_0-400_")
    changed = [D.cache_stem(tmp_path, 0, 401, 0.95, 3.0, 0), D.cache_stem(tmp_path, 0, 400, 0.9, 3.0, 0),
               D.cache_stem(tmp_path, 0, 400, 0.95, 2.0, 0), D.cache_stem(tmp_path, 0, 400, 0.95, 3.0, 1)]
    assert len({base, *changed}) == 5
    assert D.chunk_ranges(0, 1000) == [(0, 400), (400, 800), (800, 1000)]
    assert D.chunk_ranges(10000, 10050) == [(10000, 10050)]


def test_read_training_volumes_reads_the_chunked_cache_of_the_models_synth(tmp_path):
    """train.py caches 1000 training subjects as chunks [0,400), [400,800), [800,1000);
    the volumes must be all of them, in order, and only from the synth.py the model was trained on."""
    names = list(synth.STRUCTURE_NAMES)
    meta = {"splits": {"train": [0, 1000]}, "lr_correlation": 0.0, "cohort_seed": 0,
            "spacing_mm": synth.DEFAULT_SPACING, "synth_sha1": "abc,def"}
    y = np.arange(1000 * len(names), dtype=float).reshape(1000, len(names))
    stems = [D.cache_stem(tmp_path, a, b, 0.0, synth.DEFAULT_SPACING, 0) for a, b in D.chunk_ranges(0, 1000)]
    for stem, (a, b), version in zip(stems, D.chunk_ranges(0, 1000), ("abc", "def", "abc")):
        np.save(f"{stem}_y.npy", y[a:b])
        Path(f"{stem}_synth.txt").write_text(version + "\n")
    np.testing.assert_array_equal(D.read_training_volumes(meta, tmp_path), y)
    Path(f"{stems[1]}_synth.txt").write_text("other\n")  # a chunk made by another synth.py
    assert D.read_training_volumes(meta, tmp_path) is None
    Path(f"{stems[1]}_synth.txt").write_text("def\n")
    Path(f"{stems[2]}_y.npy").unlink()  # a missing chunk
    assert D.read_training_volumes(meta, tmp_path) is None



def test_synth_sha1_fingerprints_the_subjects_not_the_source(monkeypatch):
    """A change to what a subject is changes the fingerprint; the generator's source does not enter it."""
    current = D.synth_sha1()
    assert len(current) == 12 and D.synth_sha1() == current  # once per process
    # The source-hash values the shipped checkpoints and benchmarks/runs record name these same subjects.
    for legacy in ("17b59e39a75f", "6ff179095482"):
        assert D.same_synth(legacy, current) and D.LEGACY_SYNTH_SHA1[legacy] == current
    assert not D.same_synth("0123456789ab", current)
    generate = synth.generate_subject

    def one_voxel_brighter(*args, **kwargs):
        s = generate(*args, **kwargs)
        s.image[0, 0, 0] += 1.0
        return s

    monkeypatch.setattr(synth, "generate_subject", one_voxel_brighter)
    D.synth_sha1.cache_clear()
    try:
        assert D.synth_sha1() != current
    finally:
        D.synth_sha1.cache_clear()


def test_read_training_volumes_accepts_a_cache_recorded_under_a_legacy_synth_sha1(tmp_path):
    names = list(synth.STRUCTURE_NAMES)
    meta = {"splits": {"train": [0, 3]}, "lr_correlation": 0.0, "synth_sha1": "17b59e39a75f"}
    stem = D.cache_stem(tmp_path, 0, 3, 0.0, synth.DEFAULT_SPACING, 0)
    y = np.ones((3, len(names)))
    np.save(f"{stem}_y.npy", y)
    Path(f"{stem}_synth.txt").write_text("6ff179095482\n")  # benchmarks/runs today; the model says 17b59e39a75f
    np.testing.assert_array_equal(D.read_training_volumes(meta, tmp_path), y)
    Path(f"{stem}_synth.txt").write_text(D.synth_sha1() + "\n")
    np.testing.assert_array_equal(D.read_training_volumes(meta, tmp_path), y)


def test_reference_scans_are_what_the_shipped_checkpoint_carries():
    model, meta = D.load_model("vgg")
    carried = model.reference_inputs
    scans = D.reference_scans(meta, 2)
    assert scans.shape == (2, *carried.shape[1:]) and scans.dtype == torch.float32
    # The checkpoint stores them in float16: equal to that precision, and in the same order.
    assert torch.allclose(carried[:2].float(), scans, atol=1e-2, rtol=1e-3)
    assert not torch.allclose(carried[1].float(), scans[0], atol=1e-2, rtol=1e-3)
