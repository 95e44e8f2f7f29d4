"""What the scripts in ``benchmarks/`` share, so that each experiment script keeps only its run.

A script in ``benchmarks/`` parses its arguments, runs its experiment and
writes its results; everything two scripts (or a script and the ``smocam``
command) need alike lives here, with tests:

* :mod:`~captum_smocam.benchmarking.data` -- models (a shipped name, a
  checkpoint or an untrained VGG3D), synthetic subjects of a model's cohort,
  structure masks, splits, and the layout of ``benchmarks/train.py``'s cache;
* :mod:`~captum_smocam.benchmarking.scores` -- the localisation and
  faithfulness scores of one map, and Markdown summaries of many;
* :mod:`~captum_smocam.benchmarking.measure` -- peak memory of a call, and a warm-up before timing;
* :mod:`~captum_smocam.benchmarking.io` -- atomic writers of tables, text and figures;
* :mod:`~captum_smocam.benchmarking.sweep` and
  :mod:`~captum_smocam.benchmarking.asymmetry` -- the design and analysis
  rules of the parameter sweep and of the asymmetry experiment.

The names of the first four modules are importable from
``captum_smocam.benchmarking`` itself.
"""
from .data import (
    CACHE_CHUNK,
    CACHE_NORMALIZATION,
    POSTER_TARGETS,
    SHIPPED_VGG_ARCH,
    cache_stem,
    chunk_ranges,
    cohort_volumes,
    contralateral,
    load_model,
    load_subject,
    read_training_volumes,
    shipped_model_available,
    split_indices,
    structure_mask,
    synth_sha1,
    untrained_model,
    voxel_spacing,
)
from .io import markdown_table, save_figure, write_csv, write_json, write_text
from .measure import PeakMemory, warm_up
from .scores import HIGHER_IS_BETTER, faithfulness_scores, localisation_scores, randomization_table, summary_table

__all__ = [
    "CACHE_CHUNK",
    "CACHE_NORMALIZATION",
    "POSTER_TARGETS",
    "SHIPPED_VGG_ARCH",
    "HIGHER_IS_BETTER",
    "untrained_model",
    "load_model",
    "shipped_model_available",
    "load_subject",
    "structure_mask",
    "contralateral",
    "voxel_spacing",
    "split_indices",
    "cohort_volumes",
    "synth_sha1",
    "chunk_ranges",
    "cache_stem",
    "read_training_volumes",
    "localisation_scores",
    "faithfulness_scores",
    "summary_table",
    "randomization_table",
    "PeakMemory",
    "warm_up",
    "write_csv",
    "write_text",
    "write_json",
    "save_figure",
    "markdown_table",
]
