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


def test_matmul_peak_is_a_positive_rate():
    from captum_smocam.benchmarking import matmul_peak_gflops

    assert matmul_peak_gflops(n=128, repeats=2) > 0.0


def test_suffix_step_counts_the_suffix_forward_and_the_masks_gradient():
    from torch import nn

    from captum_smocam.benchmarking import SuffixStep

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.Conv3d(3, 4, 3, padding=1), nn.Flatten(),
                        nn.Linear(4 * 125, 2)).eval()
    step = SuffixStep(net, "0", torch.randn(1, 1, 5, 5, 5))  # the mask on the first convolution's output
    conv = 2 * 125 * 4 * 3 * 27  # the second convolution: 2 x voxels x C_out x C_in x kernel
    linear = 2 * 500 * 2
    assert step.flops(1) == 2 * (conv + linear)  # forward, and the same again for the gradient to the mask
    assert step.flops(3) == 3 * step.flops(1)  # linear in the number of masks; no weight gradients
    assert step.seconds(2, repeats=1) > 0.0

    class Branching(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(1, 1, 1)

        def forward(self, x):
            h = self.conv(x)
            return h.sum(dim=(1, 2, 3, 4)) if bool(h.sum() > 0) else -h.sum(dim=(1, 2, 3, 4))

    with pytest.raises(ValueError, match="cannot be split"):
        SuffixStep(Branching(), "conv", torch.randn(1, 1, 5, 5, 5))


@pytest.mark.parametrize("start, end, busy", [
    (0.3, 2.2, False),   # quiet: the end load is this run's own 2 threads
    (1.5, 2.2, True),    # other work at the start
    (0.3, 3.5, True),    # other work joined during the run: 1.5 above the run's own threads
    (1.0, 3.0, False),   # exactly cores / 2 is not busy
])
def test_load_warning_separates_other_work_from_the_runs_own_threads(start, end, busy):
    text = measure.load_warning((start, 0.0, 0.0), (end, 0.0, 0.0), cores=2, threads=2)
    assert (text is not None) == busy
    if busy:
        assert text == (f"the machine was busy: 1-minute load {start:.1f} at the start, {end:.1f} at the end (up to 2 "
                        "from this run's threads) on 2 cores; timings are not comparable with a quiet run, memory is")
