"""Throughput of ``smocam cohort``: scans per hour with 1 and N torchrun processes.

Writes a small synthetic cohort (``captum_smocam.synth.write_cohort``, cached in
``--workdir``), then times the real command line end to end (start-up, model
load, all scans, cohort tables) once per process count, always from an empty
output folder::

    python -m captum_smocam.cli cohort --images ... --labels ... --model M --targets all
    python -m torch.distributed.run --nproc_per_node=N -m captum_smocam.cli cohort ...

Each process count runs in two variants (``--variants``): ``plans`` — the
package as it is (kernel plans chosen by the run into a fresh plan cache under
``--workdir``, whose chosen plans the report lists; traced splits reused across
scans) — and ``stock`` — ``SMOCAM_KERNEL_TUNING=0 SMOCAM_REUSE_SPLITS=0``,
PyTorch's kernels padded to 4 rows and a trace per scan, as before issue 15.

Model: the shipped ``vgg`` if it is installed, else (``--model random``, or when
it is missing) a randomly initialised VGG3D with the shipped architecture
(:func:`captum_smocam.benchmarking.untrained_model`) on the synthetic grid.
Random weights do not change the cost: SMOCAM runs all ``--n-steps`` steps.

Usage::

    python benchmarks/cohort_throughput.py --n-scans 6 --nprocs 1 2
    python benchmarks/cohort_throughput.py --quick    # 2 scans, 1 process, 2 steps, both variants: a smoke test

Everything goes under ``--workdir`` (default ``benchmarks/runs/cohort_throughput``,
git-ignored; a ``--quick`` run uses ``benchmarks/runs/quick/cohort_throughput``,
so it never replaces the numbers of the last full run).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from captum_smocam import __version__
from captum_smocam.benchmarking import machine_description, shipped_model_available, untrained_model, write_json
from captum_smocam.models import DEFAULT_MODELS, save_checkpoint
from captum_smocam.synth import default_grid, write_cohort

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "benchmarks" / "runs"
#: Environment of each variant (``{plan_cache}`` is the variant's fresh plan cache file).
VARIANTS = {
    "plans": {"SMOCAM_KERNEL_TUNING": "1", "SMOCAM_REUSE_SPLITS": "1", "SMOCAM_PLAN_CACHE": "{plan_cache}"},
    "stock": {"SMOCAM_KERNEL_TUNING": "0", "SMOCAM_REUSE_SPLITS": "0", "SMOCAM_PLAN_CACHE": "off"},
}


def _random_model(path: Path, spacing: float) -> Path:
    """An untrained VGG3D of the shipped architecture, saved as a checkpoint for a ``spacing`` mm grid."""
    model, meta = untrained_model()
    shape, affine = default_grid(spacing)
    meta.update(input_shape=[int(s) for s in shape], spacing_mm=spacing, affine=affine.tolist())
    save_checkpoint(path, model, meta)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-scans", type=int, default=6)
    p.add_argument("--spacing", type=float, default=3.0, help="synthetic grid spacing in mm (default 3.0)")
    p.add_argument("--n-steps", type=int, default=100)
    p.add_argument("--targets", default="all")
    p.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--model", default="vgg", help="shipped name, checkpoint, or 'random' (default vgg)")
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["plans", "stock"],
                   help="plans: the package as it is; stock: kernel plans and split reuse off (default both)")
    p.add_argument("--workdir", default=None,
                   help="data, outputs and throughput.json (default: benchmarks/runs/cohort_throughput; "
                        "with --quick benchmarks/runs/quick/cohort_throughput)")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 scans, 1 process, 2 SMOCAM steps, 1 target")
    args = p.parse_args(argv)
    if args.quick:
        args.n_scans, args.nprocs, args.n_steps, args.targets = 2, [1], 2, "right_hippocampus"
    args.workdir = args.workdir or str(RUNS / "quick" / "cohort_throughput" if args.quick
                                       else RUNS / "cohort_throughput")

    work = Path(args.workdir)
    data = work / f"data_{args.n_scans}x{args.spacing:g}mm"
    if not (data / "volumes.csv").is_file():
        write_cohort(data, args.n_scans, spacing=args.spacing, show_progress=True)
    model = args.model
    if model == "random" or (model in DEFAULT_MODELS and not shipped_model_available(model)):
        print(f"model {model!r} not available; using a randomly initialised VGG3D (shipped architecture)")
        model = str(_random_model(work / f"vgg3d_random_{args.spacing:g}mm.pt", args.spacing))

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    common = ["-m", "captum_smocam.cli", "cohort", "--images", str(data / "sub-*_T1w.nii.gz"),
              "--labels", str(data / "sub-*_labels.nii.gz"), "--model", model, "--target", args.targets,
              "--n-steps", str(args.n_steps), "--no-progress"]
    results = []
    for n in args.nprocs:
        for variant in args.variants:
            out = work / f"out_np{n}_{variant}"
            shutil.rmtree(out, ignore_errors=True)
            plan_cache = work / f"plans_np{n}_{variant}.json"
            plan_cache.unlink(missing_ok=True)  # plans are chosen afresh, inside the timed run
            run_env = {**env, **{k: v.format(plan_cache=plan_cache) for k, v in VARIANTS[variant].items()}}
            launcher = [] if n == 1 else ["-m", "torch.distributed.run", f"--nproc_per_node={n}",
                                          "--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
            cmd = [sys.executable, *launcher, *common, "--out", str(out)]
            print("$", " ".join(f"{k}={run_env[k]}" for k in VARIANTS[variant]), " ".join(cmd), flush=True)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=run_env)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                print(f"command failed with status {proc.returncode}", file=sys.stderr)
                return proc.returncode
            manifest = json.loads((out / "manifest.json").read_text())
            explain = [r["timings"]["explain_s"] for r in manifest["scans"] if r["status"] == "done"]
            plans = json.loads(plan_cache.read_text()) if plan_cache.is_file() else {}
            row = {"nprocs": n, "variant": variant, "n_scans": manifest["n_done"], "wall_s": round(wall, 1),
                   "scans_per_hour": round(3600.0 * manifest["n_done"] / wall, 1),
                   "mean_explain_s_per_scan": round(sum(explain) / max(len(explain), 1), 2),
                   "first_explain_s": round(explain[0], 2) if explain else None,
                   "threads_per_rank": manifest["scans"][0]["torch_threads"],
                   "plans": sorted({p["name"] for p in plans.values()}) or ["stock"],
                   "env": {k: run_env[k] for k in VARIANTS[variant]}, "command": " ".join(cmd)}
            results.append(row)
            print(json.dumps(row), flush=True)

    report = {"machine": machine_description(), "model": model, "spacing_mm": args.spacing,
              "grid": list(default_grid(args.spacing)[0]),
              "n_steps": args.n_steps, "targets": args.targets, "cpus": len(os.sched_getaffinity(0)),
              "torch": torch.__version__, "captum_smocam": __version__, "python": platform.python_version(),
              "results": results}
    write_json(report, work / "throughput.json")
    print("\n| processes | variant | kernel plan | scans | wall (s) | scans / hour | mean explain s / scan | "
          "first scan's explain s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['nprocs']} | {r['variant']} | {', '.join(r['plans'])} | {r['n_scans']} | {r['wall_s']} | "
              f"{r['scans_per_hour']} | {r['mean_explain_s_per_scan']} | {r['first_explain_s']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
