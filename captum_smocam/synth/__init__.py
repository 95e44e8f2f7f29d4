"""A synthetic T1 cohort with known anatomy and exact volumes.

Every subject is the MNI152 2009 T1 template (shipped inside nilearn, read
from disk) pushed through a smooth invertible deformation ``phi`` drawn from
the subject's own random generator, then given a bias field, noise and a
contrast change. Because ``phi`` is known in closed form, the volume of every
labelled structure is known exactly: it is the integral of the Jacobian
determinant ``det D phi`` over the structure's template label.

Pipeline of :func:`generate_subject`::

    seed (cohort_seed, index) -> draws (scale s, log volume factors z_k,
                                        elastic waves, intensity params)
    z_k -> bump amplitudes a_k (solved so that each structure changes by
           exp(z_k) on top of s^3)
    phi(x) = c0 + s * (x - c0 + sum_k a_k w_k(x) (x - c_k) + u_elastic(x))
    volumes_k = s^3 * integral over label k of det(I + Du(x)) dx      (exact)
    image(y)  = intensity(template(phi^-1(y))), labels(y) = label(phi^-1(y))

The label map is built once per process from the template and its grey/white
matter probability maps by the rules in :func:`build_template_labels`
(tissue probabilities and intensities inside MNI boxes, split at ``x = 0``).
See ``docs/synthetic-data.md`` for the rules, the figure and measured numbers.

Modules, in the order of the pipeline (everything is importable from here):

* :mod:`.anatomy` -- the template, the label rules, a structure's label and
  mask, the image grid and the label figure;
* :mod:`.deformation` -- bumps, tissue potentials and elastic waves, the
  amplitudes solved for the drawn volume factors, exact volumes, ``phi^-1``;
* :mod:`.subjects` -- the random draws, rendering, :func:`generate_subject`;
* :mod:`.files` -- a cohort written to disk (NIfTI, LUT, volumes table).
"""
from __future__ import annotations

from .anatomy import (
    DEFAULT_SPACING,
    LABEL_COLORS,
    LABELS,
    STRUCTURE_NAMES,
    VOLUME_LOG_SD,
    build_template_labels,
    default_grid,
    plot_template_labels,
    structure_label,
    structure_mask,
    template_volumes,
)
from .files import volumes_table, write_cohort, write_lut, write_subject
from .subjects import DEFAULT_LR_CORRELATION, Subject, generate_cohort, generate_subject, template

__all__ = [
    "STRUCTURE_NAMES",
    "LABELS",
    "LABEL_COLORS",
    "DEFAULT_SPACING",
    "DEFAULT_LR_CORRELATION",
    "VOLUME_LOG_SD",
    "Subject",
    "default_grid",
    "template",
    "template_volumes",
    "structure_label",
    "structure_mask",
    "build_template_labels",
    "generate_subject",
    "generate_cohort",
    "volumes_table",
    "write_lut",
    "write_subject",
    "write_cohort",
    "plot_template_labels",
]
