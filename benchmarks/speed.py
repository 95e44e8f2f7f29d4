"""How fast is SMOCAM? Naive loop, fast path, hook path, roofline, K outputs, the poster's scale, Captum methods.

"The naive loop" is the library's own loop on the hook path with PyTorch's
kernels (``SMOCAM(...).attribute(..., fast=False, kernel_plan="stock")``): the
whole network at every step, every evaluation padded to 4 rows, as a textbook
implementation runs it; "SMOCAM hook" is the same path under the run's kernel
plan, "SMOCAM fast" the cached-prefix fast path.

Everything is measured in one process on one model (the shipped VGG3D, or a
randomly initialised VGG3D of the same architecture while the shipped weights
do not exist) and one input per size, so the ratios are comparable even on a
loaded machine. Peak memory is measured with
:class:`captum_smocam.benchmarking.PeakMemory` (CPU: the kernel's peak resident
set size ``VmHWM``, reset just before the call, minus the resident set at the
call's start: what the call adds at its peak, allocator caching included;
CUDA: ``torch.cuda.max_memory_allocated``), on CPU in a fresh subprocess per
method, so that memory an earlier method left resident does not hide the cost.

Seconds per mask are, by default, *extrapolated* from short runs so that the
whole benchmark fits in ~10 minutes: each method runs once with 1 step
(``t1`` = set-up + one evaluation) and once with ``1 + k`` steps; with
``step = (t_{1+k} - t_1) / k``, one mask at ``n_steps`` costs
``t1 + (n_steps - 1) * step``. ``--full-steps`` times real ``n_steps`` runs
instead. The fast path is also timed once for real at the default settings
on the default layer (the "< 5 s per mask" target).

Kernel plans (:mod:`captum_smocam.kernel_choice`) are chosen afresh in every run
(a private plan cache, unless ``--plan-cache`` names one), and each SMOCAM row
says which plan ran; "fast, stock kernels" is the fast path with
``kernel_plan="stock"`` (PyTorch's kernels, every evaluation padded to 4 rows,
SMOCAM before plans).

The roofline: the masked suffix's floating-point operations per step (forward
and the mask's gradient, ``torch.utils.flop_counter``) divided by the
machine's float32 matrix-product rate measured in the same run
(:func:`captum_smocam.benchmarking.matmul_peak_gflops`, at the start and at the
end; the larger is used) is the floor of one step; ``fast / roofline`` is the
measured time per step over that floor.

``--poster-scale`` adds the poster's scale: :func:`captum_smocam.models.rebsamen_alexnet3d`
(Rebsamen et al. 2020's widths, kernel sizes and strides; random weights; 4
random reference inputs for the preserve objective), one 256³ input, ``--poster-outputs`` of its 165 outputs explained at once with
``internal_batch_size`` bounding memory, at the early layer (``features.pool1``,
40³) and the default layer (``features.conv2``, 18³), each in a fresh process:
seconds per mask, peak memory, achieved GFLOP/s of the optimisation against
the matrix-product rate. With fewer than 165 outputs the time for all 165 is
*extrapolated* (seconds per mask x 165) and labelled so.

``--memory-vs-outputs 16 64`` adds the peak memory of explaining K outputs
of one scan at once, for each K, each in a fresh process: the Rebsamen-size
AlexNet3D on one ``--memory-size``³ input (default 160), the mask at
``--memory-layer`` (default ``features.conv2``), ``internal_batch_size``
``--memory-ibs`` (16), ``--memory-steps`` steps (2), after an untimed 1-output
call (tracing, plan, the references' features); the ratio of the last K's peak
to the first's says whether memory is bounded by ``internal_batch_size``
(issue 23: <= 1.3 for 64 vs 16). ``--only-memory`` runs this alone.

Every run records the 1-minute load average at its start and end and warns
(on screen and in the report) when other work shared the machine
(:func:`captum_smocam.benchmarking.load_warning`): its timings are then not
comparable with a quiet run's; its memory figures are.

Run::

    python benchmarks/speed.py                 # sizes 64 and 96 (~15 min on 2 CPU cores)
    python benchmarks/speed.py --only-memory --memory-vs-outputs 16 64 --threads 1   # memory vs K (~5 min)
    python benchmarks/speed.py --poster-scale --poster-outputs 8 165   # + the poster's scale (8 and 165 outputs)
    python benchmarks/speed.py --quick         # tiny smoke run (< 1 min; add --poster-scale to try it)
    python benchmarks/speed.py --device cuda   # same script on a GPU (benchmarks/gpu_run.sh)

Writes ``speed.md`` (Markdown tables) and ``speed.json`` under ``--out``; a
``--quick`` run writes ``speed_quick.md`` and ``speed_quick.json``, by default
under ``benchmarks/runs/quick/speed/`` (git-ignored), never over the published
tables; ``--trace-only`` (the fast path's set-up per call with and without
reuse across calls, nothing else) writes ``speed_trace.*`` under
``benchmarks/logs/speed_trace/``, and an ``--only-memory`` run ``speed_memory.*``
under ``benchmarks/logs/speed_memory/``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from captum_smocam import benchmarking, fastpath, kernel_choice, kernels
from captum_smocam.models import set_reference_inputs
from captum_smocam.benchmarking import (
    PeakMemory,
    SuffixStep,
    cpu_model,
    load_warning,
    machine_description,
    matmul_peak_gflops,
    shipped_model_available,
    write_json,
    write_text,
)
from captum_smocam.smocam import OBJECTIVE_DEFAULTS, POSTER_N_STEPS, SMOCAM

REPO = Path(__file__).resolve().parents[1]
#: Where the full run's tables go (committed), and a quick run's (git-ignored scratch).
RESULTS, QUICK = REPO / "benchmarks" / "logs" / "speed", REPO / "benchmarks" / "runs" / "quick" / "speed"

SMOCAM_METHODS = ("naive", "fast", "fast-stock", "hook")
#: How each SMOCAM method runs: the fast path or the hook path, and its kernel plan (None: the run's plan).
#: "naive" is the library's own loop on the hook path with PyTorch's kernels.
METHOD_RUNS = {"naive": ("hook", "stock"), "fast": ("fast", None), "fast-stock": ("fast", "stock"),
               "hook": ("hook", None)}
#: Steps per mask of the published speed tables (the poster's count; ``--n-steps`` changes it).
N_STEPS = POSTER_N_STEPS
#: The poster's scale: input size, outputs, the two layers explained, and the number of reference inputs.
POSTER_SIZE, POSTER_OUTPUTS, POSTER_LAYERS = 256, 165, ("features.pool1", "features.conv2")
POSTER_REFERENCES = 4
#: Masks of a mixed-precision run agree with float32 if their max relative difference is below this.
AUTOCAST_TOLERANCE = 0.05
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CAPTUM_METHODS = ("LayerGradCam", "Saliency", "DeepLift", "Occlusion")


# ----------------------------------------------------------------------------- set-up
def load_model(device, use_shipped=True):
    """``(model, default layer, description)``: the shipped VGG, or an untrained VGG3D of its architecture."""
    name = "vgg" if use_shipped and shipped_model_available("vgg") else "untrained"
    model, meta = benchmarking.load_model(name)
    source = ("shipped captum_smocam/data/vgg3d_default.pt" if name == "vgg" else
              f"random-init VGG3D({benchmarking.SHIPPED_VGG_ARCH}) (shipped weights not used)")
    return model.to(device).eval(), meta["default_layer"], source


#: The reference inputs each model came with (model -> tensor), kept here rather than on the model.
_SHIPPED_REFERENCES: dict = {}


def references_for(model, size):
    """Give ``model`` its shipped reference inputs resampled to ``size³`` (trilinear), as a user of that grid would.

    The preserve objective's default references are the model's
    ``reference_inputs`` (8 scans on the shipped 56 x 68 x 60 grid); the
    benchmark's cubic inputs need references of their own size. Cost: one
    prefix pass over the 8 references per size (cached across calls, as in a
    cohort), as on the shipped grid. Every size is resampled from the
    references the model came with (:data:`_SHIPPED_REFERENCES`).
    """
    from captum_smocam.models import get_reference_inputs

    if model not in _SHIPPED_REFERENCES:
        if get_reference_inputs(model) is None:
            return model
        _SHIPPED_REFERENCES[model] = get_reference_inputs(model)
    original = _SHIPPED_REFERENCES[model]
    resampled = torch.nn.functional.interpolate(original, size=(size,) * 3, mode="trilinear", align_corners=False)
    set_reference_inputs(model, resampled)
    return model


def make_input(size, device):
    """A reproducible N(0, 1) volume ``1 x 1 x size^3`` (content does not change the cost)."""
    g = torch.Generator().manual_seed(size)
    return torch.randn(1, 1, size, size, size, generator=g).to(device)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


# ----------------------------------------------------------------------------- suffix lower bound, roofline
def suffix_figures(model, layer_name, x, reps, device, plan):
    """``(seconds, flops)`` of one suffix step (forward + gradient to one mask), under ``plan``, ``F`` cached."""
    step = SuffixStep(model, layer_name, x)
    return step.seconds(1, plan, repeats=reps), step.flops(1)


# ----------------------------------------------------------------------------- SMOCAM runs
#: The kernel plan of the latest SMOCAM call of each (method, layer), for the report.
PLANS_USED = {}


def run_smocam(method, model, layer_name, x, target, n_steps, plan="auto"):
    """One SMOCAM call of ``method`` (:data:`METHOD_RUNS`; "naive": the library's loop, hook path, stock kernels)."""
    sm = SMOCAM(model, model.get_submodule(layer_name))
    path, method_plan = METHOD_RUNS[method]
    mask = sm.attribute(x, target=target, n_steps=n_steps, fast=(path == "fast"), kernel_plan=method_plan or plan)
    if sm.path != path:
        raise RuntimeError(f"asked for the {path} path, SMOCAM ran the {sm.path} path")
    PLANS_USED[(method, layer_name, tuple(x.shape))] = sm.plan
    return mask


def run_k(model_, layer_name, x, k, n_steps, internal_batch_size=None, **kwargs):
    sm = SMOCAM(model_, model_.get_submodule(layer_name))
    return sm.attribute(x.expand(k, *x.shape[1:]), target=list(range(k)), n_steps=n_steps,
                        internal_batch_size=internal_batch_size, **kwargs)


#: Seconds per optimisation step of the latest :func:`per_mask_seconds` (None when measured for real).
LAST_STEP = {"seconds": None}


def per_mask_seconds(run, n_steps, k, device, full):
    """``(seconds, how)`` for one call at ``n_steps``: real, or extrapolated from 1 and 1 + k steps.

    An untimed 1-step call comes first, so that plan choice, tracing and the
    references' features (all cached per process) do not land in the timings.
    """
    run(1)
    if full or n_steps <= 1 + k:
        LAST_STEP["seconds"] = None
        return timed(lambda: run(n_steps), device)[0], "measured"
    t1 = timed(lambda: run(1), device)[0]
    tk = timed(lambda: run(1 + k), device)[0]
    step = max(tk - t1, 0.0) / k
    LAST_STEP["seconds"] = step
    return t1 + (n_steps - 1) * step, f"t(1)+{n_steps - 1}*step, step from {1 + k} vs 1 steps"


# ----------------------------------------------------------------------------- Captum
def run_captum(method, model, layer_name, x, target):
    from captum.attr import DeepLift, LayerGradCam, Occlusion, Saliency

    if method == "LayerGradCam":
        return LayerGradCam(model, model.get_submodule(layer_name)).attribute(x, target=target)
    if method == "Saliency":
        return Saliency(model).attribute(x, target=target)
    if method == "DeepLift":
        return DeepLift(model).attribute(x, target=target, baselines=0.0)
    if method == "Occlusion":
        w = occlusion_window(x.shape[2])
        return Occlusion(model).attribute(x, target=target, sliding_window_shapes=(1, w, w, w),
                                          strides=(1, w, w, w), baselines=0.0, perturbations_per_eval=8)
    raise ValueError(method)


def occlusion_window(size):
    """Occlusion cube side = stride = size / 4 (4^3 = 64 occluded patches)."""
    return max(1, size // 4)


# ----------------------------------------------------------------------------- memory
def measure_peak(spec, device):
    """``(peak MiB, how)`` of one call of ``spec["method"]`` on a freshly loaded model and input."""
    model, _, _ = load_model(device, not spec["random"])
    references_for(model, spec["size"])
    x = make_input(spec["size"], device)
    method, layer, steps = spec["method"], spec["layer"], spec["steps"]
    # The plan the main run chose, given: choosing it here would put the probe's 5 rows into the peak.
    plan = kernels.KernelPlan.from_json(spec["plan"]) if spec.get("plan") else "auto"
    with PeakMemory(device) as mem:
        if method in SMOCAM_METHODS:
            run_smocam(method, model, layer, x, 0, steps, plan=plan)
        elif method == "fast K":
            run_k(model, layer, x, spec["k"], steps, kernel_plan=plan)
        else:
            run_captum(method, model, layer, x, 0)
    return mem.peak_mb, mem.description


def child(spec):
    """Run one measurement in this (fresh) process; print its result as JSON on the last line."""
    torch.set_num_threads(spec["threads"])
    if spec.get("kind") in CHILD_KINDS:
        print(json.dumps(CHILD_KINDS[spec["kind"]](spec)))
        return
    peak, how = measure_peak(spec, spec["device"])
    print(json.dumps({"peak_mib": peak, "how": how}))


def in_child(spec, device):
    """``child(spec)``'s result: in a fresh subprocess on CPU (so memory is measured alone), here on CUDA."""
    if torch.device(device).type == "cuda":
        if spec.get("kind") in CHILD_KINDS:
            return CHILD_KINDS[spec["kind"]](spec)
        return dict(zip(("peak_mib", "how"), measure_peak(spec, device)))
    # The child imports the same captum_smocam as this process (not another installed copy).
    here = str(Path(__import__("captum_smocam").__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, __file__, "--_child", json.dumps(spec)], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"child run failed ({spec}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_memory_mib(spec, device):
    """``(peak MiB, how)`` of one call: in a fresh subprocess on CPU, in this process on CUDA."""
    result = in_child(spec, device)
    return result["peak_mib"], result["how"]


# ----------------------------------------------------------------------------- the poster's scale
def poster_layer(spec):
    """Explain ``spec["outputs"]`` outputs of one ``size³`` input of the Rebsamen-size AlexNet3D at one layer.

    Returns seconds of the timed call, its peak extra memory, the suffix's
    FLOPs per step and mask, the kernel plan, and the set-up seconds of an
    untimed first call (tracing, plan choice, the references' features).
    """
    device = torch.device(spec["device"])
    model, x = poster_model(spec["size"], device)
    layer = model.get_submodule(spec["layer"])
    kw = dict(n_steps=spec["n_steps"], internal_batch_size=spec["ibs"], objective=spec["objective"])
    if spec.get("autocast"):
        kw["autocast"] = AUTOCAST_DTYPES[spec["autocast"]]
    k = spec["outputs"]
    sm = SMOCAM(model, layer)
    setup, _ = timed(lambda: sm.attribute(x, target=0, **{**kw, "n_steps": 1}), device)
    with PeakMemory(device) as mem:
        seconds, _ = timed(lambda: sm.attribute(x.expand(k, *x.shape[1:]), target=list(range(k)), **kw), device)
    step = SuffixStep(model, spec["layer"], x)
    feature = step.spatial
    return {"layer": spec["layer"], "feature": list(feature), "outputs": k, "seconds": seconds,
            "setup_seconds": setup, "peak_mib": mem.peak_mb, "how": mem.description,
            "suffix_flops": step.flops(1), "plan": sm.plan.describe(), "path": sm.path}


def poster_model(size, device):
    """The Rebsamen-size AlexNet3D (random weights, seed 0) carrying 4 random reference inputs, and one input."""
    from captum_smocam.models import rebsamen_alexnet3d

    torch.manual_seed(0)
    model = rebsamen_alexnet3d(POSTER_OUTPUTS).to(device).eval()
    x = make_input(size, device)
    # Reference inputs for the preserve objective, as a shipped model carries them (random volumes: the cost
    # does not depend on them); their features are computed once, in the set-up call, and reused.
    g = torch.Generator().manual_seed(1)
    set_reference_inputs(model, torch.randn(POSTER_REFERENCES, 1, *x.shape[2:], generator=g).to(device))
    return model, x


def memory_for_outputs(spec):
    """Peak extra memory of explaining ``spec["k"]`` outputs of one input at once (Rebsamen-size AlexNet3D).

    An untimed 1-output call first (tracing, kernel plan, the references' features: set-up that any number of
    outputs pays once), then the K-output call inside :class:`PeakMemory`.
    """
    device = torch.device(spec["device"])
    model, x = poster_model(spec["size"], device)
    sm = SMOCAM(model, model.get_submodule(spec["layer"]))
    kw = dict(n_steps=spec["n_steps"], internal_batch_size=spec["ibs"], objective=spec["objective"])
    sm.attribute(x, target=0, **{**kw, "n_steps": 1})
    k = spec["k"]
    with PeakMemory(device) as mem:
        seconds, _ = timed(lambda: sm.attribute(x.expand(k, *x.shape[1:]), target=list(range(k)), **kw), device)
    return {"k": k, "peak_mib": mem.peak_mb, "how": mem.description, "seconds": seconds,
            "plan": sm.plan.describe(), "path": sm.path}


def memory_vs_outputs(args, device):
    """:func:`memory_for_outputs` for each K of ``--memory-vs-outputs``, each in a fresh process; the ratio."""
    rows = []
    for k in args.memory_vs_outputs:
        spec = {"kind": "memory_k", "device": str(device), "threads": args.threads, "size": args.memory_size,
                "layer": args.memory_layer, "k": k, "ibs": args.memory_ibs, "n_steps": args.memory_steps,
                "objective": args.objective}
        r = in_child(spec, device)
        r.update(size=args.memory_size, layer=args.memory_layer, ibs=args.memory_ibs, n_steps=args.memory_steps)
        r["ratio"] = r["peak_mib"] / rows[0]["peak_mib"] if rows else 1.0
        rows.append(r)
        print(f"memory vs outputs {args.memory_size}^3 {args.memory_layer} ibs {args.memory_ibs}: K={k} peak "
              f"{r['peak_mib']:.0f} MiB ({r['ratio']:.2f} x K={rows[0]['k']}; {r['seconds']:.1f} s)", flush=True)
    return rows


def poster_scale(args, device, peak_gflops):
    rows = []
    for layer, outputs in zip(args.poster_layers, args.poster_outputs):
        spec = {"kind": "poster", "device": str(device), "threads": args.threads, "size": args.poster_size,
                "layer": layer, "outputs": outputs, "ibs": args.poster_ibs,
                "n_steps": args.poster_n_steps, "objective": args.objective, "autocast": None}
        r = in_child(spec, device)
        r["n_steps"], r["ibs"], r["size"] = args.poster_n_steps, args.poster_ibs, args.poster_size
        r["s_per_mask"] = r["seconds"] / r["outputs"]
        r["all_165_s"] = r["s_per_mask"] * POSTER_OUTPUTS
        r["all_165_how"] = "measured" if r["outputs"] == POSTER_OUTPUTS else f"extrapolated from {r['outputs']} outputs"
        r["gflops_achieved"] = r["outputs"] * r["n_steps"] * r["suffix_flops"] / r["seconds"] / 1e9
        r["of_peak"] = r["gflops_achieved"] / peak_gflops
        rows.append(r)
        print(f"poster scale {args.poster_size}^3 {layer} ({'x'.join(map(str, r['feature']))}): "
              f"{r['outputs']} masks in {r['seconds']:.1f} s ({r['s_per_mask']:.2f} s/mask), all 165: "
              f"{r['all_165_s']:.0f} s ({r['all_165_how']}), peak {r['peak_mib']:.0f} MiB, "
              f"{r['gflops_achieved']:.1f} GFLOP/s ({r['of_peak']:.2f} of matmul peak); plan {r['plan']}", flush=True)
    return rows


#: The measurements a fresh child process can run, by ``spec["kind"]`` (others: :func:`measure_peak`).
CHILD_KINDS = {"poster": poster_layer, "memory_k": memory_for_outputs}


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96], help="cubic input sizes")
    p.add_argument("--layers", nargs="+", default=None,
                   help="masked layers (default: features.block2 and the checkpoint's default_layer)")
    p.add_argument("--n-steps", type=int, default=N_STEPS,
                   help=f"steps per mask (default: {N_STEPS}, as the published tables)")
    p.add_argument("--k-steps", type=int, default=10,
                   help="steps of the long short run used to extrapolate seconds per mask")
    p.add_argument("--full-steps", action="store_true", help="time real n_steps runs (slow)")
    p.add_argument("--suffix-reps", type=int, default=20)
    p.add_argument("--k", type=int, default=None, help="outputs of one scan at once (default: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--matmul-n", type=int, default=4096, help="side of the matrix product timed as the peak")
    p.add_argument("--autocast", choices=["none", *AUTOCAST_DTYPES], default="bf16",
                   help="mixed-precision comparison at the last size (default bf16; none skips it)")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-captum", action="store_true", help="skip the Captum methods")
    p.add_argument("--no-real-run", action="store_true",
                   help="skip the real default-settings fast-path run (first size only)")
    p.add_argument("--random", action="store_true", help="random-init VGG3D even if shipped weights exist")
    p.add_argument("--poster-scale", action="store_true",
                   help="add the poster's scale: Rebsamen-size AlexNet3D, 256^3, 165 outputs")
    p.add_argument("--only-poster", action="store_true", help="run the poster's scale only")
    p.add_argument("--trace-only", action="store_true",
                   help="only measure the per-call set-up of the fast path with and without reuse (seconds)")
    p.add_argument("--poster-outputs", type=int, nargs="+", default=[POSTER_OUTPUTS],
                   help="outputs explained at the poster's scale, one value for every layer or one per "
                        "--poster-layers entry (fewer than 165: all 165 extrapolated); default 165")
    p.add_argument("--poster-layers", nargs="+", default=list(POSTER_LAYERS))
    p.add_argument("--poster-size", type=int, default=POSTER_SIZE)
    p.add_argument("--poster-ibs", type=int, default=16, help="internal_batch_size at the poster's scale")
    p.add_argument("--poster-n-steps", type=int, default=None,
                   help="steps at the poster's scale (default: the objective's default)")
    p.add_argument("--objective", default="preserve",
                   help="SMOCAM objective at the poster's scale and in --memory-vs-outputs")
    p.add_argument("--memory-vs-outputs", type=int, nargs="+", default=None, metavar="K",
                   help="peak memory of K outputs of one scan at once, for each K (fresh process each; "
                        "Rebsamen-size AlexNet3D), and the ratio of each K's peak to the first's")
    p.add_argument("--memory-size", type=int, default=160, help="input size of --memory-vs-outputs (default 160)")
    p.add_argument("--memory-layer", default="features.conv2", help="masked layer of --memory-vs-outputs")
    p.add_argument("--memory-ibs", type=int, default=16, help="internal_batch_size of --memory-vs-outputs")
    p.add_argument("--memory-steps", type=int, default=2, help="optimisation steps of --memory-vs-outputs")
    p.add_argument("--only-memory", action="store_true",
                   help="run --memory-vs-outputs only (default K: 16 64)")
    p.add_argument("--kernel-plans", choices=["first", "fastest", "off"], default=None,
                   help="SMOCAM_KERNEL_TUNING for this run: first (the default rule), fastest (timed), off")
    p.add_argument("--plan-cache", default="off",
                   help="kernel plan cache file (default off: plans are chosen afresh in this run)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--out", default=None,
                   help=f"output folder (default: {RESULTS.relative_to(REPO)}; with --quick {QUICK.relative_to(REPO)})")
    p.add_argument("--_child", "--_memory-child", dest="child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return args
    from captum_smocam.pipeline import resolve_device

    try:
        args.device = str(resolve_device(args.device))
    except ValueError as exc:
        p.error(str(exc))
    if args.only_poster:
        args.poster_scale = True
    if args.only_memory and not args.memory_vs_outputs:
        args.memory_vs_outputs = [16, 64]
    if args.memory_vs_outputs and not all(k >= 1 for k in args.memory_vs_outputs):
        p.error(f"--memory-vs-outputs takes output counts >= 1, got {args.memory_vs_outputs}")
    if args.quick:
        args.sizes, args.n_steps, args.k_steps, args.suffix_reps = [24], 6, 2, 2
        args.k = args.k or 4
        args.no_real_run = True
        args.matmul_n = min(args.matmul_n, 512)
        if args.poster_size == POSTER_SIZE:
            args.poster_size = 113  # the least input the Rebsamen layout takes
        args.poster_outputs = [min(k, 2) for k in args.poster_outputs]
        args.poster_n_steps = args.poster_n_steps or 2
        args.poster_ibs = min(args.poster_ibs, 2)
        args.memory_size = min(args.memory_size, 113)
        args.memory_ibs = min(args.memory_ibs, 2)
        args.memory_vs_outputs = args.memory_vs_outputs and [min(k, 8) for k in args.memory_vs_outputs]
    args.poster_n_steps = args.poster_n_steps or int(OBJECTIVE_DEFAULTS[args.objective]["n_steps"])
    if len(args.poster_outputs) == 1:
        args.poster_outputs = args.poster_outputs * len(args.poster_layers)
    if len(args.poster_outputs) != len(args.poster_layers) or not all(
            1 <= k <= POSTER_OUTPUTS for k in args.poster_outputs):
        p.error(f"--poster-outputs takes one count or one per layer ({len(args.poster_layers)}), each 1 to "
                f"{POSTER_OUTPUTS}; got {args.poster_outputs}")
    # A quick run never overwrites the tables; a --trace-only run writes beside them.
    args.out = args.out or str(QUICK if args.quick else RESULTS.parent / "speed_trace" if args.trace_only else
                               RESULTS.parent / "speed_memory" if args.only_memory else RESULTS)
    return args


def fmt(v, spec=".3g"):
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def trace_cost(model, layer_name, x, reps=3):
    """Seconds of setting up the fast path for one call, without reuse across calls and with it.

    Each timing is ``build_fast_runner`` followed by ``runner.reference()`` (the
    prefix pass every call needs): without reuse that is trace + split + check
    (a suffix pass on 2N rows) + the prefix pass; with reuse, a cache look-up +
    the prefix pass. The difference is what tracing cost per call before reuse.
    """
    layer = model.get_submodule(layer_name)

    def setup():
        with torch.no_grad():
            fastpath.build_fast_runner(model, layer, (x,), (), False).reference()

    cold = []
    for _ in range(reps):
        fastpath.clear_cache()
        cold.append(timed(setup, x.device)[0])
    warm = [timed(setup, x.device)[0] for _ in range(reps)]
    return min(cold), min(warm)


def max_rel(a, b):
    """Largest over masks of ``max |a - b| / max |a|``."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return float(((a - b).abs().amax(dim=1) / a.abs().amax(dim=1).clamp_min(1e-30)).max())


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return
    os.environ[kernel_choice.PLAN_CACHE_ENV] = args.plan_cache  # subprocesses inherit it
    if args.kernel_plans:
        os.environ[kernel_choice.TUNING_ENV] = {"first": "1", "fastest": "fastest", "off": "0"}[args.kernel_plans]
    torch.set_num_threads(args.threads)
    device = args.device
    cpu = cpu_model()
    info = {
        "command": "python " + " ".join([os.path.relpath(__file__, REPO)] + (argv or sys.argv[1:])),
        "device": device, "cuda_name": torch.cuda.get_device_name() if torch.device(device).type == "cuda" else None,
        "machine": machine_description(device),
        "nproc": os.cpu_count(), "cpu": cpu, "threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__,
        "captum": __import__("captum").__version__, "n_steps": args.n_steps, "k_steps": args.k_steps,
        "full_steps": args.full_steps, "loadavg_start": os.getloadavg(), "plan_cache": args.plan_cache,
        "kernel_tuning": kernel_choice.kernel_tuning_mode(),
    }
    print(json.dumps(info, indent=1), flush=True)
    t_start = time.time()
    peaks = [matmul_peak_gflops(device, n=args.matmul_n)]
    print(f"float32 matmul {args.matmul_n}^2: {peaks[0]:.1f} GFLOP/s", flush=True)
    res = {k: [] for k in ("per_mask", "real", "k_outputs", "pairs", "captum", "memory", "autocast", "poster",
                           "memory_vs_outputs")}
    res["trace"] = None
    if args.trace_only:
        model, default_layer, source = load_model(device, not args.random)
        info.update(model=source, default_layer=default_layer)
        res["trace"] = []
        for size in args.sizes:
            cold, warm = trace_cost(model, default_layer, make_input(size, device), reps=5)
            res["trace"].append({"size": size, "layer": default_layer, "cold_s": cold, "warm_s": warm})
            print(f"{size}^3 fast-path set-up per call: {cold * 1e3:.1f} ms without reuse, {warm * 1e3:.1f} ms "
                  "with reuse", flush=True)
    elif not (args.only_poster or args.only_memory):
        standard(args, device, info, res)
    if args.memory_vs_outputs and not args.trace_only:
        res["memory_vs_outputs"] = memory_vs_outputs(args, device)
    peaks.append(matmul_peak_gflops(device, n=args.matmul_n))
    info["matmul_gflops"] = peaks
    peak = max(peaks)
    for r in res["per_mask"]:
        r["roofline_step"] = r["suffix_flops"] / (peak * 1e9)
        r["fast/roofline"] = (r["fast_step"] or r["fast"] / args.n_steps) / r["roofline_step"]
        r["fast_mask/roofline_mask"] = r["fast"] / (args.n_steps * r["roofline_step"])
    if args.poster_scale and not args.only_memory:
        res["poster"] = poster_scale(args, device, peak)
    info["seconds_total"] = time.time() - t_start
    info["loadavg_end"] = os.getloadavg()
    info["load_warning"] = load_warning(info["loadavg_start"], info["loadavg_end"], os.cpu_count() or 1,
                                        info["threads"])
    if info["load_warning"]:
        print(f"WARNING: {info['load_warning']}", flush=True)
    write_report(args, info, res)


def standard(args, device, info, res):
    """Sizes x layers on the VGG: every SMOCAM path, the suffix bound, K outputs, pairs, autocast, Captum, memory."""
    model, default_layer, source = load_model(device, not args.random)
    layers = args.layers or [n for n in ("features.block2", default_layer) if n != default_layer] + [default_layer]
    k_out = args.k or model.n_outputs
    info.update(model=source, default_layer=default_layer, layers=layers, K=k_out)
    for size in args.sizes:
        x = make_input(size, device)
        references_for(model, size)
        for layer in layers:
            row = {"size": size, "layer": layer}
            for method in SMOCAM_METHODS:
                row[method], row["how"] = per_mask_seconds(
                    lambda n, m=method: run_smocam(m, model, layer, x, 0, n),
                    args.n_steps, args.k_steps, device, args.full_steps)
                if method == "fast":
                    row["fast_step"] = LAST_STEP["seconds"]
                print(f"{size}^3 {layer} {method}: {row[method]:.2f} s/mask ({row['how']})", flush=True)
            plan = PLANS_USED[("fast", layer, tuple(x.shape))]
            row["plan"] = plan.describe()
            row["suffix_step"], row["suffix_flops"] = suffix_figures(model, layer, x, args.suffix_reps, device, plan)
            row["lower_bound"] = args.n_steps * row["suffix_step"]
            row["naive/fast"] = row["naive"] / row["fast"]
            row["fast/bound"] = row["fast"] / row["lower_bound"]
            row["stock/fast"] = row["fast-stock"] / row["fast"]
            print(f"{size}^3 {layer} suffix lower bound: {row['lower_bound']:.2f} s/mask, "
                  f"{row['suffix_flops'] / 1e9:.3f} GFLOP/step; plan {row['plan']}", flush=True)
            res["per_mask"].append(row)
        if size == args.sizes[0]:
            cold, warm = trace_cost(model, default_layer, x)
            res["trace"] = [{"size": size, "layer": default_layer, "cold_s": cold, "warm_s": warm}]
            print(f"{size}^3 fast-path set-up per call: {cold * 1e3:.1f} ms without reuse, "
                  f"{warm * 1e3:.1f} ms with reuse", flush=True)
        if not args.no_real_run and size == args.sizes[0]:
            sec, _ = timed(lambda: run_smocam("fast", model, default_layer, x, 0, args.n_steps), device)
            res["real"].append({"size": size, "layer": default_layer, "fast_seconds": sec, "n_steps": args.n_steps})
            print(f"{size}^3 {default_layer} fast, real {args.n_steps}-step call: {sec:.2f} s", flush=True)
        single = next(r["fast"] for r in res["per_mask"] if r["size"] == size and r["layer"] == default_layer)
        # K outputs of one scan at once vs K single calls (default layer).
        sec_k, how_k = per_mask_seconds(lambda n: run_k(model, default_layer, x, k_out, n),
                                        args.n_steps, args.k_steps, device, args.full_steps)
        krow = {"size": size, "layer": default_layer, "K": k_out, "all_at_once": sec_k,
                "K_single": k_out * single, "ratio": sec_k / (k_out * single), "how": how_k}
        res["k_outputs"].append(krow)
        print(f"{size}^3 K={k_out}: all at once {sec_k:.2f} s vs {k_out} single {k_out * single:.2f} s "
              f"(ratio {krow['ratio']:.3f})", flush=True)
        # One mask alone vs the same mask in a batch of two.
        sec_2, how_2 = per_mask_seconds(lambda n: run_k(model, default_layer, x, 2, n),
                                        args.n_steps, args.k_steps, device, args.full_steps)
        prow = {"size": size, "layer": default_layer, "single": single, "pair": sec_2,
                "single/per_mask_in_pair": single / (sec_2 / 2), "single/pair": single / sec_2, "how": how_2}
        res["pairs"].append(prow)
        print(f"{size}^3 one mask {single:.2f} s, two masks {sec_2:.2f} s: single / per-mask-in-pair "
              f"{prow['single/per_mask_in_pair']:.2f}", flush=True)
        if args.autocast != "none" and size == args.sizes[-1]:
            res["autocast"].append(autocast_row(args, model, default_layer, x, device))
        if not args.no_captum:
            for method in CAPTUM_METHODS:
                sec, _ = timed(lambda m=method: run_captum(m, model, default_layer, x, 0), device)
                res["captum"].append({"size": size, "method": method, "seconds": sec})
                print(f"{size}^3 {method}: {sec:.2f} s/map", flush=True)
        if not args.no_memory:
            base = {"size": size, "layer": default_layer, "steps": 3, "k": k_out, "device": device,
                    "threads": args.threads, "random": args.random,
                    "plan": PLANS_USED[("fast", default_layer, tuple(x.shape))].to_json()}
            for method in [*SMOCAM_METHODS, "fast K", *([] if args.no_captum else CAPTUM_METHODS)]:
                mib, info["memory_method"] = peak_memory_mib({**base, "method": method}, device)
                res["memory"].append({"size": size, "method": method, "peak_mib": mib})
                print(f"{size}^3 peak memory {method}: {mib:.0f} MiB", flush=True)


def autocast_row(args, model, layer, x, device):
    """Two outputs of one scan, real ``n_steps`` runs, in float32 and under autocast: time and agreement."""
    dtype = AUTOCAST_DTYPES[args.autocast]
    k = 2
    run_k(model, layer, x, k, 1, autocast=dtype)  # untimed: set-up
    t32, m32 = timed(lambda: run_k(model, layer, x, k, args.n_steps), device)
    tmx, mmx = timed(lambda: run_k(model, layer, x, k, args.n_steps, autocast=dtype), device)
    a, b = m32.flatten(1).double(), mmx.flatten(1).double()
    r = float(torch.stack([torch.corrcoef(torch.stack([a[i], b[i]]))[0, 1] for i in range(k)]).min())
    row = {"size": x.shape[2], "layer": layer, "dtype": args.autocast, "masks": k, "n_steps": args.n_steps,
           "float32_s": t32, "autocast_s": tmx, "max_rel": max_rel(m32, mmx), "min_pearson": r,
           "tolerance": AUTOCAST_TOLERANCE}
    row["agrees"] = row["max_rel"] < AUTOCAST_TOLERANCE
    print(f"autocast {args.autocast}: {tmx:.2f} s vs float32 {t32:.2f} s for {k} masks; max rel diff "
          f"{row['max_rel']:.3g} (tolerance {AUTOCAST_TOLERANCE}), min Pearson r {r:.4f}", flush=True)
    return row


def write_report(args, info, res):
    rows, real, krows, crows, mrows = res["per_mask"], res["real"], res["k_outputs"], res["captum"], res["memory"]
    load = (f"load average at start/end {tuple(round(v, 1) for v in info['loadavg_start'])} / "
            f"{tuple(round(v, 1) for v in info['loadavg_end'])}; total {info['seconds_total']:.0f} s")
    md = [f"Command: `{info['command']}`  ",
          f"Machine: {info['machine']}; device {info['device']}; captum {info['captum']}, Python {info['python']}  ",
          f"float32 matmul ({args.matmul_n}²) at start / end: "
          f"{' / '.join(f'{g:.1f}' for g in info['matmul_gflops'])} GFLOP/s (the larger is the roofline peak)  ",
          f"Model: {info.get('model', '—')}; default layer `{info.get('default_layer', '—')}`; n_steps "
          f"{info['n_steps']}; kernel plans: {info['kernel_tuning']} (cache: {info['plan_cache']}); "
          f"{load}", *([f"**Warning: {info['load_warning']}**  "] if info.get("load_warning") else []), ""]
    if rows:
        md += ["### Seconds per mask", "",
               "| input | layer | naive loop | SMOCAM fast | fast, stock kernels | SMOCAM hook | suffix lower bound | "
               "naive / fast | stock / fast | fast / bound | fast / roofline |",
               "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            md.append(f"| {r['size']}³ | `{r['layer']}` | {fmt(r['naive'])} | {fmt(r['fast'])} | "
                      f"{fmt(r['fast-stock'])} | {fmt(r['hook'])} | {fmt(r['lower_bound'])} | {fmt(r['naive/fast'])} | "
                      f"{fmt(r['stock/fast'])} | {fmt(r['fast/bound'])} | {fmt(r['fast/roofline'])} |")
        md += ["", "(naive loop: the library's own loop on the hook path with PyTorch's kernels, "
               "`attribute(..., fast=False, kernel_plan=\"stock\")`; SMOCAM hook: the same path under the run's plan)",
               "", f"(naive/fast/hook: {rows[0]['how']}; lower bound: n_steps x one suffix forward + backward timed "
               f"alone under the fast path's plan, least of {args.suffix_reps}; roofline: suffix GFLOP per step / "
               "measured matmul peak, against the fast path's time per step)", "",
               "| input | layer | suffix GFLOP / step | roofline floor / step (ms) | fast path / step (ms) | "
               "kernel plan (fast path) |", "|---|---|---|---|---|---|"]
        for r in rows:
            step = r["fast_step"] if r["fast_step"] is not None else r["fast"] / args.n_steps
            md.append(f"| {r['size']}³ | `{r['layer']}` | {r['suffix_flops'] / 1e9:.3f} | "
                      f"{1e3 * r['roofline_step']:.2f} | {1e3 * step:.2f} | {r['plan']} |")
    if res["trace"]:
        md += ["", "### Fast-path set-up per call (`build_fast_runner` + the prefix pass; least of a few)", "",
               "| input | layer | without reuse (ms) | with reuse (ms) | tracing cost per call (ms) |",
               "|---|---|---|---|---|"]
        md += [f"| {t['size']}³ | `{t['layer']}` | {1e3 * t['cold_s']:.1f} | {1e3 * t['warm_s']:.1f} | "
               f"{1e3 * (t['cold_s'] - t['warm_s']):.1f} |" for t in res["trace"]]
        md += ["", "(without reuse = every call before issue 15: trace, split, check by a suffix pass on 2N rows, "
               "prefix pass; with reuse: a cache look-up and the prefix pass)"]
    if real:
        md += ["", "### One real call at default settings (fast path, default layer)", "",
               "| input | layer | n_steps | seconds |", "|---|---|---|---|"]
        md += [f"| {r['size']}³ | `{r['layer']}` | {r['n_steps']} | {r['fast_seconds']:.2f} |" for r in real]
    if krows:
        md += ["", "### All K outputs of one scan (default layer, fast path)", "",
               "| input | K | all at once (s) | K single calls (s) | ratio |", "|---|---|---|---|---|"]
        md += [f"| {r['size']}³ | {r['K']} | {fmt(r['all_at_once'])} | {fmt(r['K_single'])} | {r['ratio']:.3f} |"
               for r in krows]
        md += ["", f"(all at once: {krows[0]['how']}; K single calls = K x the single fast-path mask above)"]
    if res["pairs"]:
        md += ["", "### One mask alone vs the same mask in a batch of two (default layer, fast path)", "",
               "| input | one mask (s) | two masks (s) | one / (two / 2) | one / two |", "|---|---|---|---|---|"]
        md += [f"| {r['size']}³ | {fmt(r['single'])} | {fmt(r['pair'])} | {r['single/per_mask_in_pair']:.2f} | "
               f"{r['single/pair']:.2f} |" for r in res["pairs"]]
    if rows and krows and res["pairs"]:
        size = args.sizes[-1]
        d = next(r for r in rows if r["size"] == size and r["layer"] == info["default_layer"])
        k = next(r for r in krows if r["size"] == size)
        pr = next(r for r in res["pairs"] if r["size"] == size)
        md += ["", f"### Issue 15's criteria, side by side ({size}³, default layer, this run)", "",
               "| criterion | measured | met |", "|---|---|---|",
               f"| fast path ≥ 10 × the naive loop | {d['naive/fast']:.2f} × | "
               f"{'yes' if d['naive/fast'] >= 10 else 'no'} |",
               f"| fast path within 1.5 × of the roofline floor (per step) | {d['fast/roofline']:.2f} × | "
               f"{'yes' if d['fast/roofline'] <= 1.5 else 'no'} |",
               f"| all {k['K']} outputs ≤ 0.25 × {k['K']} single calls | {k['ratio']:.3f} | "
               f"{'yes' if k['ratio'] <= 0.25 else 'no'} |",
               f"| one mask alone not slower per mask than in a batch of two | {pr['single/per_mask_in_pair']:.2f} | "
               f"{'yes' if pr['single/per_mask_in_pair'] <= 1 else 'no'} |",
               f"| one mask alone not slower than a batch of two (wall time) | {pr['single/pair']:.2f} | "
               f"{'yes' if pr['single/pair'] <= 1 else 'no'} |"]
    if res["autocast"]:
        md += ["", "### Mixed precision (network under autocast; mask, optimiser and objective in float32)", "",
               "| input | dtype | masks | float32 (s) | autocast (s) | max relative difference | min Pearson r | "
               "within tolerance |", "|---|---|---|---|---|---|---|---|"]
        md += [f"| {r['size']}³ | {r['dtype']} | {r['masks']} | {r['float32_s']:.2f} | {r['autocast_s']:.2f} | "
               f"{r['max_rel']:.3g} | {r['min_pearson']:.4f} | {'yes' if r['agrees'] else 'no'} "
               f"(< {r['tolerance']}) |" for r in res["autocast"]]
    if res["poster"]:
        md += ["", "### The poster's scale (Rebsamen-size AlexNet3D, random weights, one input, fresh process per "
               "layer)", "",
               "| input | layer (map) | outputs run | ibs | n_steps | seconds | s / mask | all 165 (s) | "
               "peak MiB | GFLOP/s | of matmul peak | set-up (s) | plan |", "|---" * 13 + "|"]
        for r in res["poster"]:
            md.append(f"| {r['size']}³ | `{r['layer']}` ({'×'.join(map(str, r['feature']))}) | {r['outputs']} | "
                      f"{r['ibs']} | {r['n_steps']} | {r['seconds']:.1f} | {r['s_per_mask']:.2f} | "
                      f"{r['all_165_s']:.0f} ({r['all_165_how']}) | {r['peak_mib']:.0f} | "
                      f"{r['gflops_achieved']:.1f} | {r['of_peak']:.2f} | {r['setup_seconds']:.1f} | {r['plan']} |")
        md += ["", f"(objective {args.objective}, {POSTER_REFERENCES} random reference inputs carried by the model; "
               "GFLOP/s = outputs x n_steps x suffix GFLOP per step and mask / seconds, the prefix pass not "
               "counted; set-up: an untimed 1-step call first — tracing, kernel plan choice, the references' "
               f"features; peak memory of the timed call: {res['poster'][0]['how']})"]
    if res["memory_vs_outputs"]:
        mv = res["memory_vs_outputs"]
        md += ["", "### Peak memory vs outputs explained at once (Rebsamen-size AlexNet3D, random weights, one "
               "input, fresh process per K)", "",
               "| input | layer | ibs | n_steps | K | peak MiB | / first K | seconds | plan |", "|---" * 9 + "|"]
        md += [f"| {r['size']}³ | `{r['layer']}` | {r['ibs']} | {r['n_steps']} | {r['k']} | {r['peak_mib']:.0f} | "
               f"{r['ratio']:.2f} | {r['seconds']:.1f} | {r['plan']} |" for r in mv]
        md += ["", f"(objective {args.objective}; peak extra memory of the K-output call after an untimed 1-output "
               f"call: {mv[0]['how']}; issue 23 asks for at most 1.3 x from 16 to 64 outputs)"]
    if crows:
        md += ["", "### Captum methods, seconds per map (same input, target 0)", "",
               "| input | method | seconds |", "|---|---|---|"]
        md += [f"| {r['size']}³ | {r['method']} | {r['seconds']:.3f} |" for r in crows]
        md += ["", "(LayerGradCam on the default layer; DeepLift baseline 0; Occlusion: cube window = stride = "
               "input/4, baseline 0, 8 perturbations per evaluation)"]
    if mrows:
        how = info["memory_method"] + ("" if info["device"].startswith("cuda") else ", fresh subprocess per method")
        how += ", 3 optimisation steps"
        md += ["", f"### Peak extra memory (MiB; {how})", "", "| input | method | MiB |", "|---|---|---|"]
        md += [f"| {r['size']}³ | {r['method']} | {r['peak_mib']:.0f} |" for r in mrows]
    text = "\n".join(md) + "\n"
    print("\n" + text, flush=True)
    out, name = Path(args.out), ("speed_quick" if args.quick else "speed_trace" if args.trace_only else
                                 "speed_memory" if args.only_memory else "speed")
    write_text(text, out / f"{name}.md")
    write_json({"info": info, **res}, out / f"{name}.json")


if __name__ == "__main__":
    main()
