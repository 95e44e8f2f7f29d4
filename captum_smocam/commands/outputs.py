"""Where ``explain``, ``compare`` and ``demo`` put their files: one output set in ``--out``, published all at once.

The files are written in a private staging folder and published as one
*output set* (:class:`captum_smocam._outputs.OutputSet`): all of them or none,
with a manifest naming the set (``<stem>_outputs.json`` for ``explain``,
``compare_outputs.json``, ``demo_outputs.json``) moved in last, so a failed or
killed run leaves ``--out`` as it was. A set records the input it was computed
from and the settings of the run (:func:`run_settings`); outputs of another
input under the same names, or files no smocam manifest lists, are not
overwritten unless ``--force`` is given.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from pathlib import Path
from typing import Dict, Iterator, Sequence

import torch

from .._outputs import OutputSet, prepare_out
from ..models import get_reference_inputs

__all__ = ["run_settings", "output_set", "staged_output"]


def run_settings(args, model, layer_name: str, methods: Sequence[str]) -> Dict:
    """What a run's maps depend on beyond the scan: recorded in the manifest; a rerun with other settings
    replaces the output set as a whole (see :func:`staged_output`)."""
    from ..pipeline import smocam_settings

    refs = get_reference_inputs(model)
    labels = getattr(args, "labels", None)
    lut = getattr(args, "lut", None)
    return {
        "methods": list(methods),
        "model": str(args.model),
        "layer": layer_name,
        **({"smocam": smocam_settings(args.objective, n_steps=args.n_steps)[1]} if "smocam" in methods else {}),
        "references": (f"the model's reference_inputs ({int(refs.shape[0])} scans)"
                       if isinstance(refs, torch.Tensor) else "shifted copies of the scan"),
        "labels": os.path.abspath(labels) if labels else None,
        "lut": os.path.abspath(lut) if lut else None,
    }


def output_set(out_dir, manifest: str, source: str, overwrite: bool = False) -> OutputSet:
    """The output set ``manifest`` in ``out_dir``, after checking that ``out_dir`` is usable and that
    the set does not hold another input's outputs (unless ``overwrite``); see :func:`staged_output`."""
    out = prepare_out(out_dir)
    oset = OutputSet(out, out, manifest)
    oset.check_source(source, overwrite)
    return oset


@contextlib.contextmanager
def staged_output(oset: OutputSet, source: str, overwrite: bool = False, **record) -> Iterator[Path]:
    """Yield a staging folder whose files are published into the set's folder, all at once, on success.

    With the set's lock held: a publication a killed run left half done is
    finished or undone and stale staging folders are removed; then the block
    writes into a new staging folder, whose files are committed as the set
    (:meth:`OutputSet.commit`): other files of the same ``source`` stay only
    when the old set was made with the same ``settings`` (a ``record`` entry:
    method, model, layer, objective and its settings, references, labels);
    otherwise the old set is replaced as a whole, so no file of a run with
    other settings is left looking current. An exception leaves the folder as
    it was.

    Args:
        oset (OutputSet): from :func:`output_set`.
        source (str): the input the files are computed from (its absolute path).
        overwrite (bool, optional): replace outputs of another input, or files no
            manifest lists. Default: False
        **record: more entries for the manifest.

    Examples::

        >>> import tempfile, os
        >>> out = os.path.join(tempfile.mkdtemp(), "out")
        >>> with staged_output(output_set(out, "a_outputs.json", "/data/a.nii"), "/data/a.nii") as stage:
        ...     _ = (stage / "a.txt").write_text("x")
        >>> sorted(f for f in os.listdir(out) if not f.startswith("."))
        ['a.txt', 'a_outputs.json']
    """
    with oset:
        oset.recover()
        stage = oset.new_stage()
        try:
            yield stage
            old = oset.read_manifest() or {}
            oset.commit(stage, {"source": source, **record,
                                "written": datetime.datetime.now().isoformat(timespec="seconds")},
                        merge=old.get("settings") == record.get("settings"), overwrite=overwrite)
        finally:
            oset.discard(stage)
