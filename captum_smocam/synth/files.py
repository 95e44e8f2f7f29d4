"""A synthetic cohort on disk: NIfTI scans and label maps, the label table (LUT) and the volumes table."""
from __future__ import annotations

import os
from typing import Optional

from .anatomy import DEFAULT_SPACING, LABEL_COLORS, LABELS, STRUCTURE_NAMES, _check_spacing
from .subjects import DEFAULT_LR_CORRELATION, Subject, _check_correlation, _check_int, generate_cohort


def volumes_table(subjects) -> "pandas.DataFrame":  # noqa: F821
    """One row per subject: ``subject`` then one column per structure (cm³).

    Args:
        subjects (iterable of Subject): subjects.

    Returns:
        pandas.DataFrame: columns ``subject`` and :data:`STRUCTURE_NAMES`.

    Examples::

        >>> from captum_smocam.synth import template
        >>> volumes_table([template(12.0)]).shape
        (1, 17)
    """
    import pandas as pd

    rows = [{"subject": _subject_id(s.index), **{n: s.volumes[n] for n in STRUCTURE_NAMES}} for s in subjects]
    return pd.DataFrame(rows, columns=["subject", *STRUCTURE_NAMES])


def _subject_id(index: int) -> str:
    return "template" if index < 0 else f"sub-{index:04d}"


def write_lut(path, labels: dict = LABELS, colors: Optional[dict] = None) -> None:
    """Write a FreeSurferColorLUT-style table: ``index name R G B A`` lines (atomically).

    Args:
        path (str or Path): output file.
        labels (dict, optional): label value -> name. Default: :data:`LABELS`
        colors (dict, optional): label value -> (R, G, B). Default: :data:`LABEL_COLORS`

    Examples::

        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "labels.txt")
        >>> write_lut(p)
        >>> open(p).read().splitlines()[1].split()[:2]
        ['0', 'Unknown']
    """
    lines = ["#No. Label Name:                R   G   B   A", f"{0:<4d} {'Unknown':<30s} {0:3d} {0:3d} {0:3d} {0:3d}"]
    for value, name in sorted(labels.items()):
        r, g, b = (LABEL_COLORS if colors is None else colors).get(value, (128, 128, 128))
        lines.append(f"{int(value):<4d} {name:<30s} {r:3d} {g:3d} {b:3d} {0:3d}")
    from .._io import write_text

    write_text("\n".join(lines) + "\n", path)


def write_subject(subject: Subject, out_dir, *, grid: str = "native", label_codes: str = "synth") -> tuple:
    """Write ``sub-XXXX_T1w.nii.gz`` and ``sub-XXXX_labels.nii.gz``.

    Args:
        subject (Subject): the subject.
        out_dir (str or Path): output folder (created).
        grid (str, optional): ``"native"`` (the subject's own grid) or a grid of
            :data:`~captum_smocam.synth.standard.MNI_GRIDS` (``"mni1mm"``,
            ``"mni2mm"``: FSL's MNI152 grids, LAS), onto which the image and
            labels are resampled in world coordinates. Default: ``"native"``
        label_codes (str, optional): ``"synth"`` (1-16, :data:`LABELS`) or
            ``"freesurfer"`` (aseg codes, 17/53 the hippocampi). Default: ``"synth"``

    Returns:
        tuple: the two paths.
    """
    from .standard import GRIDS, LABEL_CODES, freesurfer_codes, to_standard

    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
    if label_codes not in LABEL_CODES:
        raise ValueError(f"label_codes must be one of {LABEL_CODES}, got {label_codes!r}")
    import nibabel as nib
    from pathlib import Path

    from .._io import atomic_write

    out_dir = Path(out_dir)
    stem = _subject_id(subject.index)
    paths = (out_dir / f"{stem}_T1w.nii.gz", out_dir / f"{stem}_labels.nii.gz")
    image, labels, affine = subject.image, subject.labels, subject.affine
    if grid != "native":
        image, labels, affine = to_standard(image, labels, affine, grid)
    if label_codes == "freesurfer":
        labels = freesurfer_codes(labels)
    for path, data in zip(paths, (image, labels)):
        img = nib.Nifti1Image(data, affine)
        img.header.set_xyzt_units("mm")
        img.set_qform(affine, code=4)  # 4 = MNI152
        img.set_sform(affine, code=4)
        with atomic_write(path) as tmp:
            nib.save(img, tmp)
    return paths


def write_cohort(
    out_dir,
    n: int,
    *,
    seed: int = 0,
    lr_correlation: float = DEFAULT_LR_CORRELATION,
    spacing: float = DEFAULT_SPACING,
    show_progress: bool = True,
    grid: str = "native",
    label_codes: str = "synth",
) -> "pandas.DataFrame":  # noqa: F821
    """Write subjects ``0 .. n-1``, ``labels.txt`` and ``volumes.csv``.

    With a standard ``grid`` (``"mni2mm"``: FSL's 91 x 109 x 91 MNI152 2 mm
    grid; ``"mni1mm"``: 182 x 218 x 182) the subjects are rendered at that
    grid's voxel size (``spacing`` is then not used) and resampled onto it;
    ``volumes.csv`` keeps the generator's exact volumes.

    Args:
        out_dir (str or Path): output folder (created).
        n (int): number of subjects ``>= 1``.
        seed (int, optional): cohort seed. Default: 0
        lr_correlation (float, optional): see :func:`generate_subject`.
            Default: 0.95
        spacing (float, optional): grid spacing in mm. Default: 3.0
        show_progress (bool, optional): tqdm progress bar. Default: True
        grid (str, optional): see :func:`write_subject`. Default: ``"native"``
        label_codes (str, optional): see :func:`write_subject`; ``labels.txt``
            names the codes written (``17 Left-Hippocampus`` for
            ``"freesurfer"``). Default: ``"synth"``

    Returns:
        pandas.DataFrame: the volumes table written to ``volumes.csv``.

    Examples::

        >>> import tempfile
        >>> df = write_cohort(tempfile.mkdtemp(), 2, spacing=12.0, show_progress=False)
        >>> list(df["subject"])
        ['sub-0000', 'sub-0001']
    """
    from pathlib import Path

    from .._io import write_csv

    n = _check_int("n", n, minimum=1)
    seed = _check_int("seed", seed)
    lr_correlation = _check_correlation(lr_correlation)
    from .standard import GRIDS, grid_spacing, label_table

    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
    names, colors = label_table(label_codes)
    if not os.fspath(out_dir).strip():
        raise ValueError(f"out_dir is empty ({os.fspath(out_dir)!r}); name a folder")
    spacing = _check_spacing(spacing if grid == "native" else grid_spacing(grid))
    out_dir = Path(out_dir)
    subjects = []
    for subject in generate_cohort(
        range(n), show_progress=show_progress, spacing=spacing, lr_correlation=lr_correlation, cohort_seed=seed
    ):
        write_subject(subject, out_dir, grid=grid, label_codes=label_codes)
        subject.image = subject.labels = None  # keep only the volumes in memory
        subjects.append(subject)
    table = volumes_table(subjects)
    write_lut(out_dir / "labels.txt", names, colors)
    write_csv(table, out_dir / "volumes.csv", float_format="%.6f")
    return table
