"""Measuring what a call costs: its peak memory, and a warm-up so that the first timed call pays no start-up.

Peak memory is measured one way in every benchmark (:class:`PeakMemory`). On CPU the kernel keeps the peak resident set size of a process (``VmHWM`` in
``/proc/self/status``) and lets a process reset it to the current resident set
size (writing ``5`` to ``/proc/self/clear_refs``, Linux >= 4.0). Resetting it
before the block and reading it after gives the exact peak, short-lived peaks
included, with no sampling thread. Where the reset is not allowed, a thread
samples the resident set size instead. On CUDA, PyTorch's own peak counter is
used.
"""
from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Optional, Sequence

import torch

from ..kernel_choice import cpu_model  # the CPU's name, as the kernel plans' cache keys it
from ..methods import attribute_map

__all__ = ["PeakMemory", "PEAK_MEMORY_METHODS", "warm_up", "cpu_model", "machine_description", "matmul_peak_gflops",
           "SuffixStep", "load_warning"]

#: How :class:`PeakMemory` measures: ``"auto"`` picks ``"cuda"`` for a CUDA
#: device, else ``"vmhwm"`` where the kernel allows the reset, else ``"sampled"``.
PEAK_MEMORY_METHODS = ("auto", "vmhwm", "sampled", "cuda")

_DESCRIPTIONS = {
    "vmhwm": "peak RSS (VmHWM, reset just before the call) minus RSS at the call's start",
    "sampled": "largest RSS sampled every {interval:g} s during the call minus RSS at its start",
    "cuda": "peak CUDA memory allocated during the call minus before it",
    None: "not measured (no /proc/self/status)",
}


def _status_kib(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak since the last reset) of this process, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} is not in /proc/self/status")


def _reset_peak_rss() -> None:
    """Reset this process's peak-RSS mark (VmHWM) to its current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _malloc_trim() -> None:
    """Return freed heap memory to the OS (glibc), so that reusing it counts as new memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak extra memory while a block runs, in MiB: what the block adds at its peak.

    CPU: freed heap memory is first returned to the OS (glibc
    ``malloc_trim(0)``), the kernel's peak-RSS mark is reset, and ``peak_mb``
    is ``VmHWM`` after the block minus ``VmRSS`` before it: the extra resident
    memory of the whole process (tensors, the autograd graph, temporaries,
    allocator caching, every thread), exact and not sampled. Where
    ``/proc/self/clear_refs`` cannot be written, a thread samples ``VmRSS``
    every ``interval`` seconds (``method`` ``"sampled"``: a peak shorter than
    ``interval`` can be missed). ``nan`` where ``/proc`` is missing (not Linux).

    CUDA: ``torch.cuda.max_memory_allocated()`` after
    ``torch.cuda.reset_peak_memory_stats()``, minus the memory allocated
    before the block (tensors only, not the caching allocator's reserve).

    Args:
        device (str or torch.device, optional): where the block computes.
            Default: ``"cpu"``
        method (str, optional): one of :data:`PEAK_MEMORY_METHODS`. Default: ``"auto"``
        interval (float, optional): sampling period of the ``"sampled"`` method,
            in seconds. Default: 0.002

    Attributes:
        peak_mb (float): the peak extra memory in MiB, set when the block ends.
        method (str): the method used (``"auto"`` resolved), or None without ``/proc``.
        description (str): the method in words, for a report.

    Examples::

        >>> import torch
        >>> with PeakMemory() as mem:
        ...     t = torch.ones(2**24)  # 64 MiB, touched
        ...     del t
        >>> mem.peak_mb > 48 or mem.method is None
        True
    """

    def __init__(self, device="cpu", method: str = "auto", interval: float = 0.002) -> None:
        if method not in PEAK_MEMORY_METHODS:
            raise ValueError(f"method must be one of {PEAK_MEMORY_METHODS}, got {method!r}")
        if not interval > 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        self.device = torch.device(device)
        self.interval = interval
        self.method: Optional[str] = method
        self.peak_mb = float("nan")
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "PeakMemory":
        if self.method == "cuda" or (self.method == "auto" and self.device.type == "cuda"):
            self.method = "cuda"
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        _malloc_trim()
        try:
            self._base = _status_kib("VmRSS")
        except OSError:  # no /proc: not Linux
            self.method = None
            return self
        if self.method in ("auto", "vmhwm"):
            try:
                _reset_peak_rss()
            except OSError:
                if self.method == "vmhwm":
                    raise
                self.method = "sampled"
            else:
                self.method = "vmhwm"
                self._base = _status_kib("VmRSS")
        if self.method == "sampled":
            self._peak = self._base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    @property
    def description(self) -> str:
        return _DESCRIPTIONS.get(self.method, self.method).format(interval=self.interval)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _status_kib("VmRSS"))
            self._stop.wait(self.interval)

    def __exit__(self, *exc) -> bool:
        if self.method == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self.method == "vmhwm":
            self.peak_mb = (_status_kib("VmHWM") - self._base) / 1024.0
        elif self.method == "sampled":
            self._stop.set()
            self._thread.join()
            self.peak_mb = (max(self._peak, _status_kib("VmRSS")) - self._base) / 1024.0
        return False


def warm_up(model, x, target: int, methods, **method_kwargs) -> None:
    """One cheap, untimed call of each gradient-based method, so that the first timed map pays no warm-up.

    The first autograd pass, torch.fx trace and thread-pool start-up of a
    process cost a few tenths of a second, which would otherwise land on
    whichever method or configuration happens to run first. SMOCAM runs 2
    steps, SmoothGrad 2 samples, Integrated Gradients 2 steps; Occlusion is
    warmed by the plain forward pass (it only runs forwards).

    Args:
        model (Module): the regressor.
        x (Tensor): one input, ``1 x 1 x X x Y x Z``.
        target (int): an output index.
        methods (sequence of str): methods of :data:`captum_smocam.methods.METHODS`.
        **method_kwargs: arguments of :func:`captum_smocam.methods.attribute_map`
            (``layer``, ``output_std``, ``smocam_kwargs``, ...).

    Examples::

        >>> from captum_smocam.models import VGG3D
        >>> net = VGG3D(2, channels=(4, 8)).eval()
        >>> warm_up(net, torch.randn(1, 1, 8, 8, 8), 0, ["smocam", "occlusion"], layer=net.features.block2)
    """
    kw = dict(method_kwargs)
    kw["smocam_kwargs"] = dict(kw.get("smocam_kwargs") or {}, n_steps=2)
    kw.update(smoothgrad_samples=2, ig_steps=2)
    with torch.no_grad():
        model(x)
    for m in methods:
        if m != "occlusion":
            attribute_map(m, model, x, int(target), **kw)


def machine_description(device: str = "cpu") -> str:
    """What every timing in docs/ names: CPU model, cores, torch build, threads, and the GPU if one is used.

    Examples::

        >>> "threads" in machine_description()
        True
    """
    text = (f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")
    if torch.device(device).type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(torch.device(device))}"
    return text


def load_warning(load_start: Sequence[float], load_end: Sequence[float], cores: int, threads: int) -> Optional[str]:
    """A one-line warning when other work shared the machine during a benchmark, else None.

    The machine counts as busy when the 1-minute load average (the first
    value of ``os.getloadavg()``) was above ``cores / 2`` at the start, before
    the run loaded the machine, or at the end once the run's own ``threads``
    are taken off. Timings of a busy run are not comparable with a quiet
    run's (the threads of the run and of the other work share the cores);
    peak memory is.

    Args:
        load_start (sequence of float): ``os.getloadavg()`` at the start.
        load_end (sequence of float): ``os.getloadavg()`` at the end.
        cores (int): CPUs of the machine (``os.cpu_count()``).
        threads (int): threads the run itself kept busy.

    Returns:
        str or None: the warning, naming both loads.

    Examples::

        >>> load_warning((0.2, 0.1, 0.1), (2.1, 1.0, 0.5), cores=2, threads=2) is None
        True
        >>> print(load_warning((3.0, 2.5, 1.0), (4.0, 3.0, 1.5), cores=2, threads=2))
        the machine was busy: 1-minute load 3.0 at the start, 4.0 at the end (up to 2 from this run's threads) on 2 cores; timings are not comparable with a quiet run, memory is
    """
    start, end = float(load_start[0]), float(load_end[0])
    if start <= cores / 2 and end - threads <= cores / 2:
        return None
    return (f"the machine was busy: 1-minute load {start:.1f} at the start, {end:.1f} at the end (up to {threads} "
            f"from this run's threads) on {cores} cores; timings are not comparable with a quiet run, memory is")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device="cpu", n: int = 4096, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """The machine's measured matrix-product rate: GFLOP/s of the fastest of ``repeats`` ``n x n`` products.

    ``2 n^3`` floating-point operations per product, in ``dtype`` on ``device``,
    with the threads torch uses now; one untimed product first. This is the
    "peak" every roofline ratio in ``docs/performance.md`` divides by: it is
    measured, in the same run, not taken from a data sheet, and it is lower
    on a loaded machine.

    Examples::

        >>> matmul_peak_gflops(n=64, repeats=2) > 0
        True
    """
    device = torch.device(device)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n ** 3 / best / 1e9


class SuffixStep:
    """One step of the masked suffix alone: forward from the layer's cached tensor, gradient to the mask.

    What any implementation of SMOCAM's loop pays per step, built on the
    package's own split of the model (:mod:`captum_smocam.fastpath`): the
    layer's tensor ``F`` of one input is computed once; :meth:`__call__` runs
    the layers after it on ``F * M`` for ``rows`` masks and takes the gradient
    of the outputs' sum with respect to ``M``. :meth:`flops` counts it with
    ``torch.utils.flop_counter`` (PyTorch's kernels; a kernel plan changes
    the time, not the count).

    Args:
        model (Module): the network (traceable by torch.fx).
        layer_name (str): the masked layer.
        x (Tensor): one input, ``1 x C x ...``.

    Examples::

        >>> from captum_smocam.models import VGG3D
        >>> net = VGG3D(2, channels=(4, 8)).eval()
        >>> step = SuffixStep(net, "features.block2", torch.randn(1, 1, 8, 8, 8))
        >>> step.flops() > 0
        True
    """

    def __init__(self, model, layer_name: str, x: torch.Tensor) -> None:
        from ..fastpath import build_fast_runner

        runner = build_fast_runner(model, model.get_submodule(layer_name), (x,), (), False)
        if runner is None:
            raise ValueError(f"the model cannot be split at {layer_name!r} (see the fast path's log)")
        with torch.no_grad():
            _, feature = runner.reference()
        self.runner, self.spatial, self.device = runner, tuple(feature.shape[2:]), x.device
        self.dtype = feature.dtype

    def __call__(self, rows: int = 1, plan=None) -> None:
        from ..kernels import STOCK

        plan = plan or STOCK
        mask = torch.ones((rows, 1, *self.spatial), device=self.device, dtype=self.dtype, requires_grad=True)
        index = torch.zeros(rows, dtype=torch.long, device=self.device)
        with torch.enable_grad(), plan.activate():
            out = self.runner(lambda t: t * mask, index)
        torch.autograd.grad(out.sum(), mask)

    def flops(self, rows: int = 1) -> int:
        """Floating-point operations of one call with ``rows`` masks (forward and the mask's gradient)."""
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            self(rows)
        return int(counter.get_total_flops())

    def seconds(self, rows: int = 1, plan=None, repeats: int = 5) -> float:
        """The least time of ``repeats`` calls (one untimed call first)."""
        self(rows, plan)
        best = float("inf")
        for _ in range(repeats):
            _sync(self.device)
            start = time.perf_counter()
            self(rows, plan)
            _sync(self.device)
            best = min(best, time.perf_counter() - start)
        return best
