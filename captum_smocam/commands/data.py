"""``smocam synth`` and ``smocam references``: the data a study needs, written from the command line.

``synth`` writes a synthetic cohort (:func:`captum_smocam.synth.write_cohort`);
``references`` writes a copy of a checkpoint carrying reference scans built
from the user's own (:func:`captum_smocam.references.attach_references`).
"""
from __future__ import annotations

from ..pipeline import DEFAULT_MODEL
from .flags import CLIError

__all__ = ["add_synth", "run_synth", "add_references", "run_references"]


def add_synth(sub) -> None:
    """Declare ``smocam synth`` and its flags."""
    p = sub.add_parser(
        "synth",
        help="write a synthetic T1 cohort with exact structure volumes",
        description="Write sub-XXXX_T1w.nii.gz and sub-XXXX_labels.nii.gz per subject, "
        "labels.txt (FreeSurferColorLUT format) and volumes.csv (cm3).",
    )
    p.add_argument("--n", type=int, required=True, help="number of subjects (>= 1)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="cohort seed (>= 0). Default: 0")
    p.add_argument(
        "--lr-correlation",
        type=float,
        default=None,
        help="correlation of left/right volume changes in [-1, 1]. Default: 0.95",
    )
    p.add_argument("--spacing", type=float, default=None, help="voxel size in mm. Default: 3.0")
    p.add_argument("--grid", choices=("native", "mni1mm", "mni2mm"), default="native",
                   help="native (default): the cropped RAS grid at --spacing; mni2mm / mni1mm: FSL's MNI152 "
                        "2 mm (91 x 109 x 91) / 1 mm (182 x 218 x 182) grids (LAS)")
    p.add_argument("--label-codes", choices=("synth", "freesurfer"), default="synth",
                   help="synth (default): labels 1-16; freesurfer: aseg codes (17/53 hippocampi, 4/43 lateral "
                        "ventricles, ...) with a matching labels.txt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_synth)


def run_synth(args) -> int:
    """Run ``smocam synth``; every value is checked before anything is written."""
    from .. import synth

    r = synth.DEFAULT_LR_CORRELATION if args.lr_correlation is None else args.lr_correlation
    spacing = synth.DEFAULT_SPACING if args.spacing is None else args.spacing
    if args.n < 1:
        raise CLIError(f"--n must be >= 1, got {args.n}")
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    if not -1.0 <= r <= 1.0:
        raise CLIError(f"--lr-correlation must be in [-1, 1], got {r}")
    if args.grid != "native" and args.spacing is not None:
        raise CLIError(f"--spacing sets the native grid's voxel size; --grid {args.grid} has its own "
                       f"(give one of them)")
    synth.default_grid(spacing)  # raises ValueError on a bad spacing
    table = synth.write_cohort(args.out, args.n, seed=args.seed, lr_correlation=r, spacing=spacing,
                               show_progress=not args.no_progress, grid=args.grid, label_codes=args.label_codes)
    print(f"wrote {len(table)} subjects, labels.txt and volumes.csv to {args.out}")
    return 0


def add_references(sub) -> None:
    """Declare ``smocam references`` and its flags."""
    from ..references import DEFAULT_K

    p = sub.add_parser("references", help="attach K reference scans, built from your own NIfTI scans, to a "
                       "checkpoint", description=(
                           "Build K reference inputs for SMOCAM from a folder or list of your scans, preprocessed "
                           "exactly as 'smocam explain' preprocesses a scan, and write a copy of the checkpoint "
                           "that carries them (with which files, when and how in its metadata). Use scans of the "
                           "model's population, not the ones you will explain."))
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="CKPT_OR_NAME",
                   help=f"checkpoint file or shipped model name (default: {DEFAULT_MODEL})")
    p.add_argument("--scans", nargs="+", required=True, metavar="DIR_OR_GLOB_OR_LIST",
                   help="a folder (its *_T1w.nii[.gz], else every .nii[.gz]), globs (quote them), .txt list "
                        "files or paths")
    p.add_argument("--k", type=int, default=DEFAULT_K, help=f"number of references (default: {DEFAULT_K})")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw of K scans among them (default: 0)")
    p.add_argument("--out", required=True, metavar="FILE", help="the checkpoint to write (.pt)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=run_references)


def run_references(args) -> int:
    """Run ``smocam references``: write the checkpoint copy and list the scans drawn."""
    from ..references import PROVENANCE_KEY, attach_references

    meta = attach_references(args.model, args.scans, args.out, k=args.k, seed=args.seed, overwrite=args.force)
    prov = meta[PROVENANCE_KEY]
    print(f"wrote {args.out}: {args.model} with {meta['n_reference_inputs']} reference inputs drawn (seed "
          f"{prov['seed']}) from {prov['n_candidates']} scans:")
    for f in prov["files"]:
        print(f"  {f}")
    return 0
