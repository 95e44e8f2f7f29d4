"""Time the synthetic cohort generator on one CPU core.

Usage::

    python benchmarks/synth_speed.py [--n 20] [--spacing 3.0]
    python benchmarks/synth_speed.py --quick   # 2 subjects: a smoke test
    python benchmarks/synth_speed.py --template-table
    python benchmarks/synth_speed.py --cohort-stats 100
    python benchmarks/synth_speed.py --label-check 10

Prints the one-off cost of the per-process caches (template, labels,
potentials, grid) and the CPU and wall time per subject, single-threaded.
Also prints how well the realised volume changes follow the drawn ones and
the smallest Jacobian determinant over the subjects. It writes no file.
"""
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from captum_smocam import synth  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="subjects to time. Default: 20")
    parser.add_argument("--spacing", type=float, default=synth.DEFAULT_SPACING)
    parser.add_argument("--template-table", action="store_true", help="print the template volumes (markdown)")
    parser.add_argument(
        "--cohort-stats",
        type=int,
        default=0,
        metavar="N",
        help="generate N subjects for lr_correlation 0.95 and 0 and print volume spread and L/R correlations",
    )
    parser.add_argument(
        "--label-check",
        type=int,
        default=0,
        metavar="N",
        help="compare label voxel counts x voxel volume with the exact volumes over N subjects",
    )
    parser.add_argument("--quick", action="store_true", help="time 2 subjects only (a smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n = 2
    torch.set_num_threads(1)
    if args.template_table:
        return template_table()
    if args.label_check:
        return label_check(args.label_check, args.spacing)
    if args.cohort_stats:
        return cohort_stats(args.cohort_stats, args.spacing)

    t0, c0 = time.perf_counter(), time.process_time()
    synth.generate_subject(0, spacing=args.spacing)
    print(f"first subject (builds caches): wall {time.perf_counter() - t0:.1f} s, cpu {time.process_time() - c0:.1f} s")

    base = synth.template_volumes()
    wall, cpu, err, jmin = [], [], [], []
    for i in range(1, args.n + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        s = synth.generate_subject(i, spacing=args.spacing)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        s3 = s.params["scale"] ** 3
        err.append(max(abs(math.log(s.volumes[n] / (base[n] * s3 * s.params["volume_factors"][n]))) for n in base))
        jmin.append(s.params["min_jacobian"])
    shape = synth.default_grid(args.spacing)[0]
    print(f"grid {shape} at {args.spacing:g} mm, {args.n} subjects, 1 thread")
    print(f"per subject: cpu median {np.median(cpu):.3f} s (max {max(cpu):.3f}), wall median {np.median(wall):.3f} s")
    print(f"realised vs drawn volume factor: max |log ratio| {max(err):.4f}")
    print(f"smallest Jacobian determinant: {min(jmin):.3f}")


def template_table():
    v = synth.template_volumes()
    print("| structure | left (cm³) | right (cm³) |")
    print("|---|---:|---:|")
    for name in synth.STRUCTURE_NAMES[::2]:
        base = name[len("left_"):]
        print(f"| {base} | {v['left_' + base]:.2f} | {v['right_' + base]:.2f} |")


def cohort_stats(n, spacing):
    base = synth.template_volumes()
    pairs = [name[len("left_"):] for name in synth.STRUCTURE_NAMES[::2]]
    for r in (0.95, 0.0):
        subjects = list(synth.generate_cohort(range(n), spacing=spacing, lr_correlation=r, show_progress=False))
        ratio = {k: np.array([s.volumes[k] / base[k] for s in subjects]) for k in base}
        local = {k: ratio[k] / np.array([s.params["scale"] ** 3 for s in subjects]) for k in base}
        jmin = min(s.params["min_jacobian"] for s in subjects)
        shrunk = sum(s.params["shrink"] < 1 for s in subjects)
        print(f"lr_correlation={r}: {n} subjects, smallest Jacobian {jmin:.3f}, {shrunk} shrunk")
        print("| structure | volume / template: 5th, 50th, 95th pct (min, max) | L/R corr of log volume | of log local factor |")
        print("|---|---|---:|---:|")
        for b in pairs:
            x = ratio["left_" + b]
            q = np.percentile(x, [5, 50, 95])
            c_tot = np.corrcoef(np.log(ratio["left_" + b]), np.log(ratio["right_" + b]))[0, 1]
            c_loc = np.corrcoef(np.log(local["left_" + b]), np.log(local["right_" + b]))[0, 1]
            print(
                f"| {b} | {q[0]:.2f}, {q[1]:.2f}, {q[2]:.2f} ({x.min():.2f}, {x.max():.2f}) | {c_tot:.2f} | {c_loc:.2f} |"
            )


def label_check(n, spacing):
    shape, affine = synth.default_grid(spacing)
    voxel = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    err = {k: [] for k in synth.STRUCTURE_NAMES}
    for s in synth.generate_cohort(range(n), spacing=spacing, show_progress=False):
        for value, name in synth.LABELS.items():
            err[name].append((s.labels == value).sum() * voxel / s.volumes[name] - 1.0)
    print(f"label voxels x {voxel * 1000:g} mm3 vs exact volume, {n} subjects, grid {shape}")
    print("| structure | mean relative error | largest |")
    print("|---|---:|---:|")
    for name in synth.STRUCTURE_NAMES:
        e = np.array(err[name])
        print(f"| {name} | {e.mean():+.3f} | {e[np.argmax(np.abs(e))]:+.3f} |")


if __name__ == "__main__":
    main()
