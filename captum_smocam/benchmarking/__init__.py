"""What the scripts in ``benchmarks/`` share, so that each experiment script keeps only its run.

A script in ``benchmarks/`` parses its arguments, runs its experiment and
writes its results; everything two scripts (or a script and the ``smocam``
command) need alike lives here, with tests:

* :mod:`~captum_smocam.benchmarking.data` -- models (a shipped name, a
  checkpoint or an untrained VGG3D), synthetic subjects of a model's cohort,
  structure masks, splits, and the layout of ``benchmarks/train.py``'s cache;
* :mod:`~captum_smocam.benchmarking.scores` -- the localisation and
  faithfulness scores of one map, and Markdown summaries of many (means,
  ranks with paired bootstrap intervals, compactness);
* :mod:`~captum_smocam.benchmarking.compare` -- the report of a method
  comparison; :mod:`~captum_smocam.benchmarking.variants` -- SMOCAM scored
  with other references (its own, none, built from scans);
* :mod:`~captum_smocam.benchmarking.measure` -- peak memory of a call, and a warm-up before timing;
* :mod:`~captum_smocam.benchmarking.io` -- atomic writers of tables, text and figures;
* :mod:`~captum_smocam.benchmarking.sweep` and
  :mod:`~captum_smocam.benchmarking.asymmetry` -- the design and analysis
  rules of the parameter sweep and of the asymmetry experiment.

The names of the first four modules are importable from
``captum_smocam.benchmarking`` itself.
"""
from . import data, io, measure, scores
# Each module's __all__ is re-exported, so that its names are listed in one place only.
from .data import *  # noqa: F401,F403
from .io import *  # noqa: F401,F403
from .measure import *  # noqa: F401,F403
from .scores import *  # noqa: F401,F403

__all__ = [*data.__all__, *scores.__all__, *measure.__all__, *io.__all__]
