"""Tests of captum_smocam.benchmarking.measure: peak memory of a block, and the warm-up."""
import os

import pytest
import torch

from captum_smocam.benchmarking import measure

needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")


def _touch_64_mib():
    t = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    float(t.sum())
    del t


@needs_proc
@pytest.mark.parametrize("method", ["auto", "sampled"])
def test_peak_memory_sees_a_freed_allocation(method):
    with measure.PeakMemory(method=method) as small:
        pass
    with measure.PeakMemory(method=method) as big:
        _touch_64_mib()
    assert big.method == ("sampled" if method == "sampled" else small.method)
    assert big.peak_mb > 48 and big.peak_mb > small.peak_mb + 40
    assert ("VmHWM" if big.method == "vmhwm" else "sampled") in big.description


@needs_proc
def test_peak_memory_falls_back_to_sampling_where_the_peak_cannot_be_reset(monkeypatch):
    def refuse():
        raise PermissionError("clear_refs is read-only here")

    monkeypatch.setattr(measure, "_reset_peak_rss", refuse)
    with measure.PeakMemory() as mem:
        _touch_64_mib()
    assert mem.method == "sampled" and mem.peak_mb > 48
    with pytest.raises(PermissionError):
        with measure.PeakMemory(method="vmhwm"):
            pass


def test_peak_memory_rejects_unknown_settings():
    with pytest.raises(ValueError, match="'rss'"):
        measure.PeakMemory(method="rss")
    with pytest.raises(ValueError, match="interval"):
        measure.PeakMemory(interval=0)


def test_warm_up_runs_each_gradient_method_cheaply_and_no_occlusion(monkeypatch):
    from captum_smocam.models import VGG3D

    calls = []
    monkeypatch.setattr(measure, "attribute_map", lambda m, *a, **kw: calls.append((m, kw["smocam_kwargs"])))
    net = VGG3D(2, channels=(4, 8)).eval()
    measure.warm_up(net, torch.randn(1, 1, 8, 8, 8), 1, ["smocam", "occlusion", "gradcam"],
                    layer=net.features.block2, smocam_kwargs={"lr": 1.0})
    assert calls == [("smocam", {"lr": 1.0, "n_steps": 2}), ("gradcam", {"lr": 1.0, "n_steps": 2})]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_peak_memory_on_cuda_counts_the_tensors_of_the_block():
    with measure.PeakMemory("cuda") as mem:
        t = torch.ones(2**24, device="cuda")  # 64 MiB
        del t
    assert mem.method == "cuda" and 63 < mem.peak_mb < 66 and "CUDA" in mem.description
