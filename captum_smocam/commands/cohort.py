"""``smocam cohort`` and ``smocam report``: a whole study explained, and one HTML page of the run.

``cohort`` runs :func:`captum_smocam.cohort.run_cohort`; ``report`` writes one
HTML page of a cohort run (:func:`captum_smocam.report.write_report`), as
``cohort --report`` does at the end.
"""
from __future__ import annotations

import sys

from .flags import add_model_args, add_run_args, add_smocam_args, add_target_arg

__all__ = ["add_cohort", "run_cohort", "add_report", "run_report"]


def add_cohort(sub) -> None:
    """Declare ``smocam cohort`` and its flags."""
    from ..cohort_inputs import PAIRINGS

    description = (
        "Explain every scan of a cohort: per scan, maps (one NIfTI per target on the scan's grid), a region "
        "table and predictions; then cohort tables (mean and sd per region) and a summary figure. Complete "
        "scans are skipped on a rerun. Under torchrun --nproc_per_node=N the scans are sharded across ranks."
    )
    p = sub.add_parser("cohort", description=description, help="SMOCAM maps, region tables and predictions for "
                       "every scan of a cohort (resumable; torchrun shards)")
    p.add_argument("--images", nargs="+", required=True, metavar="GLOB_OR_LIST",
                   help="T1 scans: globs (quote them), .txt list files or paths")
    add_target_arg(p, "outputs to explain: 'all' or comma-separated names/indices (default: all)", default="all",
                   old="--targets")
    add_model_args(p)
    add_smocam_args(p)
    p.add_argument("--internal-batch-size", type=int, default=None, metavar="B",
                   help="at most B masks optimised at once (bounds memory; default: all)")
    p.add_argument("--labels", nargs="+", default=None, metavar="GLOB",
                   help="label maps on the scans' grids, paired by subject id (sub-XX[_ses-YY] or file stem); "
                        "a scan without one gets no region table")
    p.add_argument("--pair-labels", choices=PAIRINGS, default="id",
                   help="id (default): pair label maps with scans by subject id and refuse ambiguous pairings; "
                        "sorted: pair the i-th scan with the i-th label map in sorted order")
    p.add_argument("--lut", default=None, metavar="FILE",
                   help="FreeSurferColorLUT-format label names (default: labels.txt beside the label maps)")
    add_run_args(p, "cohort", "redo scans that are already complete")
    p.add_argument("--report", action="store_true", help="write <out>/report.html at the end (smocam report)")
    p.set_defaults(func=run_cohort)


def run_cohort(args) -> int:
    """Run ``smocam cohort``; exit status 1 if any scan failed (rank 0), else 0.

    ``--n-steps`` is checked once, by :func:`captum_smocam.pipeline.smocam_settings` inside
    :func:`captum_smocam.cohort.run_cohort` (its range first by :func:`captum_smocam._cli_checks.check_args`).
    """
    from .. import cohort

    res = cohort.run_cohort(
        args.images, args.model, args.target, labels=args.labels, lut=args.lut, out=args.out,
        layer=args.layer, objective=args.objective, n_steps=args.n_steps,
        internal_batch_size=args.internal_batch_size, device=args.device, force=args.force,
        show_progress=not args.no_progress, pair_labels=args.pair_labels, trust_checkpoint=args.trust_checkpoint,
    )
    if res["rank"] != 0:
        return 0
    print(f"smocam cohort: {res['n_done']} done, {res['n_skipped']} skipped (complete), "
          f"{res['n_failed']} failed; results in {res['out']}", file=sys.stderr)
    if args.report:
        from ..report import write_report

        try:
            print(f"smocam cohort: report in {write_report(res['out'], show_progress=not args.no_progress)}",
                  file=sys.stderr)
        except ValueError as exc:  # e.g. every scan failed: the run's own status says so
            print(f"smocam cohort: no report: {exc}", file=sys.stderr)
    return 1 if res["n_failed"] else 0


def add_report(sub) -> None:
    """Declare ``smocam report`` and its flags."""
    p = sub.add_parser(
        "report",
        help="one self-contained HTML report of a smocam cohort run (maps, regions, predictions, atypical subjects)",
        description="Read a finished smocam cohort folder and write one HTML file, figures embedded, no network "
                    "needed: per target the cohort mean map, region shares, predictions (errors and R2 with "
                    "--truth) and each subject's atypicality; then the run's settings and failed scans.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of a smocam cohort run")
    p.add_argument("--truth", default=None, metavar="CSV",
                   help="true values: a 'subject' column and one column per target (volumes.csv of smocam synth)")
    p.add_argument("--out", default=None, metavar="FILE", help="the HTML file (default: RUN_DIR/report.html)")
    p.add_argument("--top-k", type=int, default=None, metavar="N",
                   help="most atypical subjects shown beside the cohort mean, per target (default: 3)")
    p.add_argument("--background", default="template", metavar="TEMPLATE_OR_SUBJECT",
                   help="drawn under the maps: 'template' (MNI152, default) or a subject id of the run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_report)


def run_report(args) -> int:
    """Run ``smocam report``: the HTML page of a cohort run."""
    from ..report import DEFAULT_TOP_K, write_report

    top_k = DEFAULT_TOP_K if args.top_k is None else args.top_k
    if top_k < 0:
        raise ValueError(f"--top-k must be >= 0, got {top_k}")
    path = write_report(args.run_dir, args.out, args.truth, top_k=top_k, background=args.background,
                        show_progress=not args.no_progress)
    print(f"smocam report: {path}")
    return 0
