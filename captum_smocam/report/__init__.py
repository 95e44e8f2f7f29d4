"""One self-contained HTML report of a ``smocam cohort`` run: its maps at a glance, and its atypical subjects.

``smocam report RUN_DIR`` (and :func:`write_report`, its Python form) reads a
finished run folder (``manifest.json``, per scan the NIfTI maps, region table
and predictions; see ``docs/cohort.md``) and writes one HTML file with every
figure embedded as a base64 PNG: no network, no external script, font or
style sheet. Per target: the cohort's mean map over the MNI152 template (or a
chosen subject's scan), the region shares (mean ± sd), the predictions (with
``truth``: errors and R²), and each subject's *atypicality*
(:func:`atypicality_scores`, defined in ``docs/report.md``) against its
prediction error, with the most atypical subjects' maps beside the cohort
mean. Then the run's settings and its failed scans.

In data-flow order: :mod:`.run` reads the run folder back, :mod:`.scores`
scores each subject's region shares, :mod:`.page` draws the figures and
writes the page.
"""
from __future__ import annotations

from .page import DEFAULT_TOP_K, write_report
from .run import CohortRun, load_run, read_truth
from .scores import MAD_TO_SD, MIN_SCALE, atypicality_scores, region_share_matrix, robust_z

__all__ = [
    "write_report",
    "atypicality_scores",
    "robust_z",
    "region_share_matrix",
    "load_run",
    "CohortRun",
    "read_truth",
    "DEFAULT_TOP_K",
    "MIN_SCALE",
    "MAD_TO_SD",
]
