"""The flags the ``smocam`` sub-commands share, declared once, and the settings read from them.

A flag means one thing everywhere: ``--model``, ``--layer``, ``--target``,
``--objective``, ``--n-steps``, ``--labels``, ``--lut``, and ``--out``,
``--force``, ``--device`` and ``--no-progress`` on every command that
computes. Renamed flags keep their old spelling for one release, with a
warning on use (:data:`DEPRECATED_FLAGS`). SMOCAM gets only the settings the
user gave (:func:`smocam_kwargs`); the others are the objective's defaults.
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, Optional

from ..cohort import DEFAULT_OUT as COHORT_OUT
from ..pipeline import DEFAULT_MODEL, DEVICES
from ..smocam import DEFAULT_OBJECTIVE, OBJECTIVE_DEFAULTS, OBJECTIVES

__all__ = ["CLIError", "DEFAULT_OUT", "DEPRECATED_FLAGS", "add_flag", "add_model_args", "add_target_arg",
           "add_smocam_args", "add_label_args", "add_run_args", "add_scan_command_args", "smocam_kwargs"]

#: ``--out`` when it is not given, per command.
DEFAULT_OUT = {"explain": "smocam-out", "compare": "smocam-out", "demo": "smocam-demo", "cohort": COHORT_OUT}
#: Old spelling -> new spelling of the renamed flags (``--quiet`` of explain, compare and demo; ``--targets``
#: of cohort): the old one still works for one release, with a warning.
DEPRECATED_FLAGS = {"--quiet": "--no-progress", "--targets": "--target"}


class CLIError(Exception):
    """An error the user can fix; printed as one line."""


class _DeprecatedFlag(argparse.Action):
    """The old spelling of a renamed flag: does what the new one does, and says so on stderr."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"smocam: warning: {option_string} is deprecated and goes in the next release; use "
              f"{DEPRECATED_FLAGS[option_string]}", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_flag(p: argparse.ArgumentParser, flag: str, *, old: Optional[str] = None, **kwargs) -> None:
    """``p.add_argument(flag, ...)``, and its old spelling ``old`` (see :data:`DEPRECATED_FLAGS`), hidden from --help."""
    p.add_argument(flag, **kwargs)
    if old is not None:
        store_true = kwargs.get("action") == "store_true"
        p.add_argument(old, dest=flag.lstrip("-").replace("-", "_"), action=_DeprecatedFlag,
                       nargs=0 if store_true else None, const=True if store_true else None, help=argparse.SUPPRESS)


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--trust-checkpoint`` and ``--layer``."""
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="CKPT_OR_NAME",
                   help=f"checkpoint file (any architecture, see docs/own-model.md) or shipped model name "
                        f"(default: {DEFAULT_MODEL})")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="also read a checkpoint that can run code when loaded (a whole pickled module, or a "
                        "factory that is a function); only for files you made or trust")
    p.add_argument("--layer", default=None, metavar="NAME",
                   help="layer to explain at (default: the checkpoint's default_layer)")


def add_target_arg(p: argparse.ArgumentParser, what: str, default: Optional[str] = None,
                   old: Optional[str] = None) -> None:
    """``--target`` (required unless a ``default`` is given), described by ``what``."""
    add_flag(p, "--target", old=old, required=default is None, default=default, metavar="TARGET",
             help=what + (f" ({old} is the old spelling)" if old else ""))


def add_smocam_args(p: argparse.ArgumentParser) -> None:
    """``--objective`` and ``--n-steps``."""
    steps = ", ".join(f"{o} {OBJECTIVE_DEFAULTS[o]['n_steps']}" for o in OBJECTIVES)
    p.add_argument("--objective", choices=OBJECTIVES, default=DEFAULT_OBJECTIVE,
                   help=f"SMOCAM's objective (default: {DEFAULT_OBJECTIVE}; see docs/method.md)")
    p.add_argument("--n-steps", type=int, default=None, metavar="N",
                   help=f"SMOCAM optimisation steps (default: the objective's: {steps})")


def add_label_args(p: argparse.ArgumentParser) -> None:
    """``--labels`` (one label map) and ``--lut``."""
    p.add_argument("--labels", default=None, help="label map (NIfTI) on the scan's grid, for region tables")
    p.add_argument("--lut", default=None, metavar="FILE",
                   help="FreeSurferColorLUT-format label names (default: labels.txt beside the label map)")


def add_run_args(p: argparse.ArgumentParser, command: str, force_help: str, old_progress: Optional[str] = None
                 ) -> None:
    """``--out``, ``--force``, ``--device`` and ``--no-progress``: every command that computes has them."""
    p.add_argument("--out", default=DEFAULT_OUT[command], metavar="DIR",
                   help=f"output folder (default: {DEFAULT_OUT[command]})")
    p.add_argument("--force", action="store_true", help=force_help)
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto (default): CUDA when available, else cpu")
    add_flag(p, "--no-progress", old=old_progress, action="store_true",
             help="no progress bars" + (f" ({old_progress} is the old spelling)" if old_progress else ""))


def add_scan_command_args(p: argparse.ArgumentParser, command: str) -> None:
    """The flags of a command that explains one scan (``explain``, ``compare``), after its own: model, SMOCAM,
    labels and the run's ``--out``, ``--force``, ``--device`` and ``--no-progress``."""
    add_model_args(p)
    add_smocam_args(p)
    add_label_args(p)
    add_run_args(p, command, "replace outputs in --out that come from another input (or that no smocam run wrote)",
                 old_progress="--quiet")


def smocam_kwargs(args) -> Dict:
    """What the user gave of SMOCAM's settings, checked by :func:`captum_smocam.pipeline.smocam_settings` (the
    one check of ``--n-steps`` beyond the range :func:`captum_smocam._cli_checks.check_args` enforces)."""
    from ..pipeline import smocam_settings

    return smocam_settings(args.objective, n_steps=args.n_steps)[0]
