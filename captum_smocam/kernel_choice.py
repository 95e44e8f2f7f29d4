"""Choosing a kernel plan: candidates, the per-row invariance check, timing, and the caches of the choice.

The plans themselves (what a plan is, and the kernels it runs) are in
:mod:`captum_smocam.kernels`; this module decides which plan a SMOCAM call
uses. Plans are chosen per (model architecture, layer, feature shape without
the batch, dtype, device, threads) by :func:`choose_plan` — never per batch
size — verified (and, with ``"fastest"``, timed) once, and cached per process
(:data:`PLAN_CACHE_SIZE` entries) and, when ``SMOCAM_PLAN_CACHE`` names a file,
on disk; see ``docs/performance.md``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import platform
import re
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import _settings
from ._cache import LRUCache
from ._model_state import architecture_key
from .kernels import STOCK, KernelPlan

logger = logging.getLogger(__name__)

__all__ = [
    "candidates",
    "verify",
    "time_plans",
    "choose_plan",
    "plan_key",
    "plan_for",
    "cpu_model",
    "set_kernel_tuning",
    "kernel_tuning_mode",
    "kernel_tuning_enabled",
    "clear_plan_cache",
    "PLAN_CACHE_ENV",
    "TUNING_ENV",
    "TUNING_MODES",
    "PLAN_CACHE_SIZE",
]

#: Environment variable of the plan choice: unset or ``1``/``on``: the first per-row invariant candidate
#: (a fixed rule: every process on every machine with the same torch build chooses the same plan);
#: ``fastest``: the fastest invariant candidate, timed on this machine (see :func:`choose_plan`); ``0``,
#: ``off``, ``false``, ``no``: no plans, every call uses :data:`~captum_smocam.kernels.STOCK` (PyTorch's own
#: kernels with ``min_rows = 4``, SMOCAM before plans).
TUNING_ENV = _settings.KERNEL_TUNING
#: Environment variable naming an on-disk plan cache (a JSON file). Unset (the default) or ``off``: plans
#: are cached per process only, so SMOCAM writes nothing outside the folders a user names; a cohort can set
#: it to share the choices (and skip the checks) between processes.
PLAN_CACHE_ENV = _settings.PLAN_CACHE

#: The modes of plan choice (:func:`kernel_tuning_mode`).
TUNING_MODES = ("off", "first", "fastest")

# --------------------------------------------------------------------------- #
# The switch.
# --------------------------------------------------------------------------- #
def set_kernel_tuning(enabled) -> None:
    """Kernel plans for this process: True (the rule, ``"first"``), ``"fastest"``, False (``"off"``), or None
    (follow ``SMOCAM_KERNEL_TUNING``); kept by :func:`captum_smocam._settings.set_override`.

    Off, every SMOCAM call runs :data:`STOCK` (PyTorch's kernels, 4 rows at
    least), as before kernel plans existed.
    """
    if enabled is None or enabled in TUNING_MODES:
        mode = enabled
    elif isinstance(enabled, bool):
        mode = "first" if enabled else "off"
    else:
        raise ValueError(f"expected True, False, None or one of {TUNING_MODES}, got {enabled!r}")
    _settings.set_override(TUNING_ENV, mode)


def kernel_tuning_mode() -> str:
    """``"first"`` (default), ``"fastest"`` or ``"off"``: :func:`set_kernel_tuning`, else ``SMOCAM_KERNEL_TUNING``."""
    return _settings.kernel_tuning()


def kernel_tuning_enabled() -> bool:
    """Whether SMOCAM uses kernel plans (:func:`kernel_tuning_mode` is not ``"off"``)."""
    return kernel_tuning_mode() != "off"


# --------------------------------------------------------------------------- #
# Choosing a plan.
# --------------------------------------------------------------------------- #
#: Batch sizes whose rows must equal the rows computed alone for a plan to count as per-row invariant.
VERIFY_BATCHES = (2, 3, 5)
#: A plan replaces an earlier candidate only if it is this much faster (timings are noisy, and the earlier
#: candidates are the more trusted: per-row invariant without padding).
MARGIN = 1.25

Probe = Callable[[KernelPlan, Tensor], Tuple[Tensor, Tensor]]


def candidates(device: torch.device, dtype: torch.dtype, fastest: bool = False) -> List[KernelPlan]:
    """The plans worth trying on ``device`` for ``dtype``, most trusted first; :data:`STOCK` is always last.

    On CPU: oneDNN convolutions with row-wise products and max pooling by the
    ``channels_last_3d`` kernel (float32 only: oneDNN
    does not run float64, where the stock 3-D convolution is one kernel for
    every batch size already, so only the row-wise products are added), and
    with ``fastest`` also in ``channels_last_3d``. Elsewhere (CUDA):
    :data:`STOCK` only.
    """
    if torch.device(device).type != "cpu":
        return [STOCK]
    if dtype == torch.float32 and torch.backends.mkldnn.is_available():
        plans = [KernelPlan("onednn+rowwise+pool", "onednn", "rowwise", False, 1, pool="channels_last")]
        if fastest:
            plans.append(KernelPlan("onednn+rowwise+cl", "onednn", "rowwise", True, 1))
        return plans + [STOCK]
    return [KernelPlan("rowwise", "stock", "rowwise", False, 1), STOCK]


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device) -> Tuple[float, Any]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, out


def verify(probe: Probe, plan: KernelPlan, masks: Tensor) -> bool:
    """Per-row invariance of ``plan`` on ``probe``.

    ``probe(plan, m)`` evaluates the network on ``len(m)`` copies of one
    example with the masks ``m`` (``B x 1 x <spatial>``) and returns the
    outputs and the gradients with respect to ``m``. The plan is invariant if
    every row computed alone equals (bitwise, outputs and gradients) the same
    row computed in batches of :data:`VERIFY_BATCHES`.
    """
    singles = [probe(plan, masks[i:i + 1]) for i in range(len(masks))]
    for b in VERIFY_BATCHES:
        out, grad = probe(plan, masks[:b])
        for i in range(b):
            if not (torch.equal(out[i:i + 1], singles[i][0]) and torch.equal(grad[i:i + 1], singles[i][1])):
                return False
    return True


#: Rounds of timing; each round times every eligible plan once (one mask, five masks), and each plan
#: keeps its least time: interleaved rounds spread a passing load over all plans.
ROUNDS = 3


def time_plans(probe: Probe, plans: Sequence[KernelPlan], masks: Tensor,
               rounds: int = ROUNDS) -> Dict[str, List[float]]:
    """``{plan name: [seconds for one mask, for five masks]}`` per evaluation (least over ``rounds`` rounds).

    One mask under a padded plan runs ``min_rows`` rows.
    """
    device = masks.device
    for plan in plans:  # warm-up
        probe(plan, masks[:plan.min_rows])
    best = {plan.name: [float("inf"), float("inf")] for plan in plans}
    for _ in range(rounds):
        for plan in plans:
            t1, _ = _timed(lambda: probe(plan, masks[:max(1, plan.min_rows)]), device)
            t5, _ = _timed(lambda: probe(plan, masks[:5]), device)
            best[plan.name] = [min(best[plan.name][0], t1), min(best[plan.name][1], t5)]
    return best


def choose_plan(probe: Probe, masks: Tensor, plans: Optional[Sequence[KernelPlan]] = None,
                fastest: bool = False) -> KernelPlan:
    """The first per-row-invariant plan for ``probe`` (see :func:`verify`), or the fastest; else :data:`STOCK`.

    By default (the rule) the first candidate that proves per-row invariance
    wins, untimed: the choice depends only on the model, the shape and the
    torch build, never on the machine's load, so every process computes the
    same masks (different plans round differently in the last bits, and the
    poster's objective can amplify that to a few percent of a mask).

    With ``fastest``, each eligible candidate's cost is the time of one mask
    alone plus that of five masks together (a plan is chosen per model and
    shape, never per batch size, so both must be good), timed in
    interleaved rounds (:func:`time_plans`); a candidate replaces an earlier
    one only when it is :data:`MARGIN` times cheaper. :data:`STOCK` needs no
    check (its padding to 4 rows is what makes it invariant). The returned
    plan records the timings (``seconds``) and why it won (``reason``).

    Args:
        probe: see :func:`verify`.
        masks (Tensor): ``5 x 1 x <spatial>`` test masks on the probe's device.
        plans (sequence of KernelPlan, optional): candidates, most trusted
            first. Default: :func:`candidates` for the masks' device and dtype.
        fastest (bool, optional): time the candidates. Default: False
    """
    plans = list(plans) if plans is not None else candidates(masks.device, masks.dtype, fastest)
    eligible, rejected = [], []
    for plan in plans:
        if not fastest and any(not p.stock for p in eligible):
            break  # the rule: the first invariant candidate
        if plan.stock:
            eligible.append(plan)
            continue
        try:
            ok = verify(probe, plan, masks)
        except Exception as exc:  # a kernel that cannot run this model: not a candidate
            logger.info("SMOCAM: kernel plan %s failed on this model (%s: %s)", plan.name, type(exc).__name__, exc)
            rejected.append(f"{plan.name} failed ({type(exc).__name__})")
            continue
        if ok:
            eligible.append(plan)
        else:
            rejected.append(f"{plan.name} not per-row invariant")
    if not fastest:
        best = eligible[0] if eligible else STOCK
        reason = ("the first per-row invariant candidate (untimed)" if not best.stock
                  else "no candidate proved per-row invariant")
        reason += f"; {'; '.join(rejected)}" if rejected else ""
        return dataclasses.replace(best, verified=None if best.stock else True, seconds={}, reason=reason)
    if not any(p.stock for p in eligible):
        eligible.append(STOCK)
    seconds = time_plans(probe, eligible, masks) if len(eligible) > 1 else {}
    best, best_cost = eligible[0], sum(seconds.get(eligible[0].name, [0.0]))
    for plan in eligible[1:]:
        cost = sum(seconds[plan.name])
        if cost * MARGIN < best_cost:
            best, best_cost = plan, cost
    ranking = ", ".join(f"{k} {1e3 * v[0]:.1f}/{1e3 * v[1]:.1f} ms" for k, v in seconds.items())
    reason = f"1 mask / 5 masks per evaluation: {ranking}" if ranking else "the only candidate"
    reason += f"; {'; '.join(rejected)}" if rejected else ""
    return dataclasses.replace(best, verified=None if best.stock else True, seconds=seconds, reason=reason)


# --------------------------------------------------------------------------- #
# Caches.
# --------------------------------------------------------------------------- #
#: Most plans kept per process (least recently used dropped first).
PLAN_CACHE_SIZE = 64
_PLANS = LRUCache(PLAN_CACHE_SIZE)


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else ``platform.processor()``, else ``"unknown CPU"``); it keys
    the plan cache.

    Examples::

        >>> isinstance(cpu_model(), str)
        True
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def plan_key(model: Any, layer_name: str, input_shapes: Sequence[Sequence[int]], dtype: torch.dtype,
             device: torch.device, to_input: bool) -> str:
    """The cache key of a plan: model architecture, layer, input shapes without the batch, dtype, device,
    threads, CPU model and torch version."""
    device = torch.device(device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model())
    parts = [architecture_key(model), layer_name, str(bool(to_input)), repr([list(s) for s in input_shapes]),
             str(dtype), device.type, where, f"threads={torch.get_num_threads()}", torch.__version__]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


def _disk_path() -> Optional[str]:
    return _settings.plan_cache_path()


#: The entry that marks a file as a kernel plan cache (written into every cache file).
CACHE_MARKER = "__smocam_kernel_plans__"
#: The format of the cache files this version writes and reads.
CACHE_FORMAT = 1
_KEY = re.compile(r"^[0-9a-f]{40}\|[a-z]+$")
#: Paths already warned about in this process (one warning each).
_WARNED: set = set()


def _warn_once(path: str, message: str) -> None:
    if (path, message) not in _WARNED:
        _WARNED.add((path, message))
        warnings.warn(message, UserWarning, stacklevel=3)


def _warn_not_a_cache(path: str, why: str, then: str) -> None:
    _warn_once(path, f"{_settings.PLAN_CACHE}={path!r} names a file that is not a kernel plan cache ({why}): "
                     f"it is left untouched{then}")


def _load_cache(path: str) -> Tuple[Optional[Dict[str, Any]], str]:
    """``(entries, "")`` of the plan cache at ``path`` (``{}`` when absent or empty), or ``(None, why)`` when
    the file is not a plan cache (then it must not be touched)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {}, ""
    except IsADirectoryError:
        return None, "it is a folder"
    if not raw.strip():
        return {}, ""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, "it is not JSON"
    if not isinstance(data, dict):
        return None, "it is not a JSON object"
    marker = data.pop(CACHE_MARKER, None)
    if marker is not None and marker != CACHE_FORMAT:
        return None, f"its format {marker!r} is not {CACHE_FORMAT}"
    if marker is None and not all(isinstance(k, str) and _KEY.match(k) and isinstance(v, dict)
                                  for k, v in data.items()):
        return None, "its entries are not kernel plans"
    return data, ""


def _entry_problem(data: Any) -> Optional[str]:
    """Why a cache entry is not a valid plan (None if it is)."""
    if not isinstance(data, dict):
        return f"the entry is a {type(data).__name__}, not an object"
    checks = [
        ("name", lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
        ("conv", lambda v: v in ("stock", "onednn"), "'stock' or 'onednn'"),
        ("linear", lambda v: v in ("stock", "rowwise"), "'stock' or 'rowwise'"),
        ("channels_last", lambda v: isinstance(v, bool), "true or false"),
        ("min_rows", lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1024,
         "an integer in [1, 1024]"),
        ("verified", lambda v: v is None or isinstance(v, bool), "true, false or null"),
        ("seconds", lambda v: isinstance(v, dict) and all(
            isinstance(k, str) and isinstance(t, list)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in t) for k, t in v.items()),
         "an object of lists of numbers"),
        ("reason", lambda v: isinstance(v, str), "a string"),
    ]
    if "name" not in data:
        return "it has no name"
    for field, ok, what in checks:
        if field in data and not ok(data[field]):
            return f"{field} must be {what}, got {data[field]!r}"
    return None


@contextlib.contextmanager
def _cache_lock(path: str):
    """An exclusive ``flock`` on ``<path>.lock`` (beside the cache) while the block runs."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)  # as atomic_write does for the cache
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_disk() -> Dict[str, dict]:
    """The entries of the on-disk plan cache; ``{}`` when there is none or the file is not a plan cache."""
    path = _disk_path()
    if path is None:
        return {}
    try:
        entries, why = _load_cache(path)
    except OSError:
        return {}
    if entries is None:
        _warn_not_a_cache(path, why, " and kernel plans are kept per process only")
        return {}
    return entries


def _write_disk(key: str, plan: KernelPlan) -> None:
    """Add ``plan`` to the on-disk cache: merged under the cache's lock, written atomically, never over a file
    that is not a plan cache."""
    path = _disk_path()
    if path is None:
        return
    try:
        from ._io import atomic_write

        with _cache_lock(path):
            entries, why = _load_cache(path)
            if entries is None:
                _warn_not_a_cache(path, why, " and kernel plans are kept per process only")
                return
            entries[key] = plan.to_json()
            with atomic_write(path) as tmp:
                with open(tmp, "w") as f:
                    json.dump({CACHE_MARKER: CACHE_FORMAT, **entries}, f, indent=1, sort_keys=True)
    except OSError as exc:  # a read-only home: plans are then kept per process only
        logger.info("SMOCAM: cannot write the kernel plan cache %s (%s)", path, exc)


def clear_plan_cache(disk: bool = False) -> None:
    """Forget the plans chosen in this process (and, with ``disk=True``, remove the on-disk cache file, if it is
    one: a file that is not a plan cache is left untouched)."""
    _PLANS.clear()
    path = _disk_path()
    if not disk or path is None or not os.path.isfile(path):
        return
    with _cache_lock(path):
        entries, why = _load_cache(path)
        if entries is None:
            _warn_not_a_cache(path, why, "")
            return
        os.remove(path)


def plan_for(key: str, choose: Callable[[], KernelPlan]) -> Tuple[KernelPlan, str]:
    """The plan for ``key``: from this process, from the disk cache, or ``choose()`` (then stored in both).

    Returns:
        (KernelPlan, str): the plan and where it came from (``"process"``, ``"disk"`` or ``"chosen"``).
    """
    if key in _PLANS:
        return _PLANS.get(key), "process"
    stored = _read_disk().get(key)
    if stored is not None:
        problem = _entry_problem(stored)
        if problem is None:
            plan = KernelPlan.from_json(stored)
            _PLANS.put(key, plan)
            return plan, "disk"
        _warn_once(str(_disk_path()), f"ignoring an invalid entry of the kernel plan cache {_disk_path()!r} "
                                      f"({problem}); the plan is chosen again")
    start = time.perf_counter()
    plan = choose()
    logger.info("SMOCAM: kernel plan %s chosen in %.2f s", plan.describe(), time.perf_counter() - start)
    _PLANS.put(key, plan)
    _write_disk(key, plan)
    return plan, "chosen"