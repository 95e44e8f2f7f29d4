"""The checkpoint file: its version, its size limit, reading it without running code, references beside weights.

What every checkpoint shares, whatever network it holds
(:mod:`~captum_smocam.models.checkpoints` for the package's architectures,
:mod:`~captum_smocam.models.user_checkpoints` for any other): the layout
version :data:`CHECKPOINT_FORMAT_VERSION`, :func:`read_checkpoint_file`
(``torch.load(..., weights_only=True)`` with a message that says what a bad
file is) and :func:`store_references` (the model's reference inputs as
float16 when that is lossless, else float32).
"""
from __future__ import annotations

import os
import pickle
import warnings
import zipfile

import torch
from torch import nn

from .._text import first_line
from ..model_card import get_reference_inputs

__all__ = ["CHECKPOINT_FORMAT_VERSION", "MAX_PARAMETERS", "read_checkpoint_file", "store_references"]

#: Version of the checkpoint layout written by :func:`~captum_smocam.models.save_checkpoint`.
CHECKPOINT_FORMAT_VERSION = 1

#: :func:`~captum_smocam.models.load_checkpoint` refuses an architecture with more parameters and buffers than this
#: (the shipped models have about 0.5 million; 200 million float32 values are 800 MB).
MAX_PARAMETERS = 200_000_000


def store_references(blob: dict, model: nn.Module, meta: dict) -> None:
    """Put the model's reference inputs (if any) into a checkpoint's ``blob`` and count them in ``meta``."""
    reference = get_reference_inputs(model)
    if reference is not None:
        blob["reference_inputs"] = _stored_references(reference, meta)
        meta["n_reference_inputs"] = int(reference.shape[0])
    else:
        meta.pop("n_reference_inputs", None)


def _stored_references(reference: torch.Tensor, meta: dict) -> torch.Tensor:
    """The reference inputs as stored in a checkpoint: float16 when every value survives the round trip
    exactly, else float32 (so they always load back as they were); checked as :func:`~captum_smocam.models.load_checkpoint` does."""
    ref = reference.detach().cpu().float()
    if not bool(torch.isfinite(ref).all()):
        raise ValueError(f"the model's reference_inputs contain {int((~torch.isfinite(ref)).sum())} NaN or Inf "
                         "value(s); set them again with set_reference_inputs")
    shape = meta.get("input_shape")
    if shape is not None and list(ref.shape[2:]) != list(shape):
        raise ValueError(f"the model's reference_inputs have spatial shape {tuple(ref.shape[2:])}, but "
                         f"metadata['input_shape'] is {tuple(shape)}")
    half = ref.to(torch.float16)
    return half if torch.equal(half.float(), ref) else ref


def read_checkpoint_file(path: str, map_location, trust_checkpoint: bool = False):
    """``torch.load(path, weights_only=True)``, with a message that says what the file is when it fails.

    Raises FileNotFoundError for a missing file and ValueError for everything
    else: an empty file, bytes that are neither a zip archive nor a pickle, a
    TorchScript archive, a truncated or corrupt archive, and a pickle that
    names a global (a function or class) that ``weights_only`` loading
    refuses, i.e. one that could run code.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path!r}")
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(f"cannot read checkpoint {path!r}: the file is empty (0 bytes)")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if zipfile.is_zipfile(path):
        try:
            names = zipfile.ZipFile(path).namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            names = []
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            raise ValueError(
                f"{path!r} is a TorchScript file (torch.jit.save of a scripted or traced module), not a "
                f"captum_smocam checkpoint: SMOCAM masks a layer through forward hooks, which ScriptModules "
                f"do not support. Save the original nn.Module with "
                f"captum_smocam.models.save_checkpoint(path, model, metadata) and pass that file."
            )
    elif not head.startswith((b"\x80", b"PK")):  # a pickle's PROTO opcode, or a (damaged) zip archive
        raise ValueError(
            f"cannot read checkpoint {path!r}: not a PyTorch checkpoint (a checkpoint is a zip archive or a "
            f"pickle written by torch.save; this {size}-byte file starts with bytes {head.hex(' ')})"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before failing clearly
            return torch.load(path, map_location=map_location, weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as err:
        detail = [line.strip() for line in str(err).splitlines() if "GLOBAL" in line]
        if detail:
            raise ValueError(
                f"refusing to load {path!r}: it is not a plain captum_smocam checkpoint (it holds "
                f"objects other than tensors and plain values, which could run code when unpickled: "
                f"{detail[0][:200]}); if you made this file or trust its source, pass trust_checkpoint=True "
                f"(smocam: --trust-checkpoint)"
            ) from None
        found = [line.strip() for line in str(err).splitlines() if line.strip().startswith("Unsupported")]
        raise ValueError(
            f"cannot read checkpoint {path!r}: its pickle data are corrupt or truncated "
            f"({found[0] if found else first_line(err)})"
        ) from None
    except Exception as err:  # torch.load raises RuntimeError, EOFError, KeyError, ... on damaged files
        raise ValueError(
            f"cannot read checkpoint {path!r}: the file is corrupt or truncated "
            f"({type(err).__name__}: {first_line(err)})"
        ) from None
