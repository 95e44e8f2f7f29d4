"""SMOCAM with other references, side by side with the methods it is compared with.

A comparison may score SMOCAM more than once, each time against other
references (``benchmarks/compare_methods.py --smocam-references``):

* ``model`` -- the model's own ``reference_inputs`` (row ``smocam``);
* ``none`` -- none at all, SMOCAM's fallback: a copy of the model without
  references (:func:`captum_smocam.models.set_reference_inputs` ``(copy, None)``;
  row ``smocam_norefs``);
* ``scans:PATH`` -- K references built from the scans in ``PATH`` by
  :func:`captum_smocam.references.build_references`, exactly as
  ``smocam references`` attaches them to a checkpoint (stored as float16;
  row ``smocam_scanrefs``).

The other methods do not use references and run once.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import torch
from torch.nn import Module

from ..models import get_reference_inputs, set_reference_inputs

__all__ = ["REFERENCE_SPECS", "VARIANT_NAMES", "SmocamVariant", "parse_reference_spec", "with_reference_inputs",
           "smocam_variants"]

#: The accepted ``--smocam-references`` values (``PATH`` a folder, glob or list file of NIfTI scans).
REFERENCE_SPECS = ("model", "none", "scans:PATH")
#: The row name of each kind of references.
VARIANT_NAMES = {"model": "smocam", "none": "smocam_norefs", "scans": "smocam_scanrefs"}


@dataclass
class SmocamVariant:
    """One SMOCAM row of a comparison: its name, the model it explains, and which references that model carries."""

    name: str
    spec: str
    model: Module
    references: str


def parse_reference_spec(spec: str) -> Tuple[str, Optional[str]]:
    """``(kind, path)`` of a ``--smocam-references`` value.

    Examples::

        >>> parse_reference_spec("none"), parse_reference_spec("scans:/data/refs")
        (('none', None), ('scans', '/data/refs'))
    """
    if spec in ("model", "none"):
        return spec, None
    if spec.startswith("scans:") and len(spec) > len("scans:"):
        return "scans", spec[len("scans:"):]
    raise ValueError(f"unknown references {spec!r}; expected one of {', '.join(REFERENCE_SPECS)}")


def with_reference_inputs(model: Module, inputs: Optional[torch.Tensor]) -> Module:
    """A copy of ``model`` carrying ``inputs`` as its references (None: none), rounded to float16 as in a checkpoint.

    The model itself is not changed.

    Examples::

        >>> from captum_smocam.models import VGG3D
        >>> net = VGG3D(2, channels=(4, 8))
        >>> twin = with_reference_inputs(net, torch.zeros(3, 1, 7, 8, 9))
        >>> hasattr(twin, "reference_inputs"), hasattr(net, "reference_inputs")
        (True, False)
    """
    twin = copy.deepcopy(model)
    if inputs is not None:
        inputs = inputs.to(torch.float16).to(torch.float32)
    return set_reference_inputs(twin, inputs)


def smocam_variants(model: Module, metadata: Mapping[str, Any], specs: Sequence[str], *, k: int = 8,
                    seed: int = 0) -> List[SmocamVariant]:
    """The SMOCAM rows of a comparison, one per reference spec (see the module docstring).

    Args:
        model (Module): the model explained (it is not changed; ``none`` and
            ``scans:`` get copies).
        metadata (Mapping): its checkpoint metadata (the ``explain`` preprocessing of ``scans:``).
        specs (sequence of str): values of :data:`REFERENCE_SPECS`, each at most once per kind.
        k (int, optional): references built from scans. Default: 8
        seed (int, optional): of the draw of ``k`` scans. Default: 0

    Returns:
        list of SmocamVariant: in the order of ``specs``.

    Examples::

        >>> from captum_smocam.models import VGG3D
        >>> [v.name for v in smocam_variants(VGG3D(2, channels=(4, 8)), {}, ["model", "none"])]
        ['smocam', 'smocam_norefs']
    """
    from ..references import build_references

    out: List[SmocamVariant] = []
    for spec in specs:
        kind, path = parse_reference_spec(spec)
        name = VARIANT_NAMES[kind]
        if any(v.name == name for v in out):
            raise ValueError(f"references of kind {kind!r} given twice ({spec!r}); give each kind once")
        if kind == "model":
            stored = get_reference_inputs(model)
            note = (f"model: {stored.shape[0]} reference_inputs" if stored is not None
                    else "model: none (SMOCAM falls back)")
            out.append(SmocamVariant(name, spec, model, note))
        elif kind == "none":
            out.append(SmocamVariant(name, spec, with_reference_inputs(model, None), "none: SMOCAM's fallback"))
        else:
            refs = build_references(path, metadata, k=k, seed=seed)
            out.append(SmocamVariant(name, spec, with_reference_inputs(model, refs),
                                     f"scans: {refs.shape[0]} built from {path} (seed {seed})"))
    return out
