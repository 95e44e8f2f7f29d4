"""The sub-commands of ``smocam``, one module per family, in the order a run uses them.

* :mod:`.flags` -- the flags every command shares, declared once (``--model``,
  ``--layer``, ``--target``, ``--objective``, ``--n-steps``, ``--labels``,
  ``--lut``; ``--out``, ``--force``, ``--device`` and ``--no-progress`` on every
  command that computes), the renamed flags' old spellings
  (:data:`DEPRECATED_FLAGS`) and SMOCAM's settings as the user gave them.
* :mod:`.scan` -- one scan with its model, loaded and checked before anything
  is written, and the tables a run is summarised by.
* :mod:`.outputs` -- the output set a command publishes into ``--out``, all of
  its files or none (:func:`staged_output`), and the settings it records.
* :mod:`.explain` -- ``explain``; :mod:`.compare` -- ``compare`` and ``demo``;
  :mod:`.cohort` -- ``cohort`` and ``report``; :mod:`.data` -- ``synth`` and
  ``references``.

Each command is a pair of functions, ``add_<name>(subparsers)`` declaring its
arguments and ``run_<name>(args)`` doing the work;
:data:`captum_smocam.cli.SUBCOMMANDS` lists them. ``explain``, ``compare`` and
``demo`` write into ``--out`` through :func:`staged_output`: a failed or killed
run leaves ``--out`` as it was, and outputs of another input under the same
names, or files no smocam manifest lists, are not overwritten unless
``--force`` is given. Everything a user can get wrong (a missing or unreadable
scan, an unknown target or layer, a scan that does not cover the model grid, an
unusable ``--out``) is checked before the expensive part.
"""
from __future__ import annotations

from .compare import COMPARE_METHODS, DEMO_TARGET
from .flags import DEFAULT_OUT, DEPRECATED_FLAGS, CLIError
from .outputs import output_set, run_settings, staged_output

__all__ = ["COMPARE_METHODS", "DEMO_TARGET", "DEFAULT_OUT", "DEPRECATED_FLAGS", "CLIError", "output_set",
           "run_settings", "staged_output"]
