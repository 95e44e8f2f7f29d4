"""The ``SMOCAM_*`` environment switches, parsed in one place with one vocabulary.

Every switch is read when it is used (not when the package is imported), so
setting it in a running process takes effect at the next call. The words are
the same for every switch (case and surrounding blanks do not matter):

* on: ``1``, ``on``, ``true``, ``yes``;
* off: ``0``, ``off``, ``false``, ``no``;
* unset or empty: the switch's default;

plus a switch's own words (``fastest`` for :data:`KERNEL_TUNING`, a file name
for :data:`PLAN_CACHE`). Any other word is an error: a ``ValueError`` whose one
line names the variable, the value and the words it accepts; a typo never
silently means "on".

===========================  =========================================  =========
variable                     values                                     default
===========================  =========================================  =========
``SMOCAM_KERNEL_TUNING``     on / ``first``, ``fastest``, off           on
``SMOCAM_REUSE_SPLITS``      on, off                                    on
``SMOCAM_PLAN_CACHE``        a file name (JSON), off / ``none``         off
===========================  =========================================  =========
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

__all__ = ["ON_WORDS", "OFF_WORDS", "KERNEL_TUNING", "REUSE_SPLITS", "PLAN_CACHE", "switch", "kernel_tuning",
           "reuse_splits", "plan_cache_path", "set_override", "check_environment"]

#: Words that turn a switch on, and off.
ON_WORDS = ("1", "on", "true", "yes")
OFF_WORDS = ("0", "off", "false", "no")

#: Kernel plans: on (``first``: the first per-row invariant plan), ``fastest`` (timed), off (PyTorch's kernels).
KERNEL_TUNING = "SMOCAM_KERNEL_TUNING"
#: Reuse traced and split models across calls: on (default) or off.
REUSE_SPLITS = "SMOCAM_REUSE_SPLITS"
#: The on-disk kernel plan cache: a file name, or off (default: plans are kept per process only).
PLAN_CACHE = "SMOCAM_PLAN_CACHE"


#: Process-wide values that win over the environment, by variable (set through :func:`set_override`, e.g. by
#: :func:`captum_smocam.kernel_choice.set_kernel_tuning` and :func:`captum_smocam.fastpath.set_reuse_splits`).
_OVERRIDES: Dict[str, Any] = {}


def set_override(name: str, value: Any) -> None:
    """Make switch ``name`` take ``value`` in this process whatever the environment says; None: follow it again."""
    if value is None:
        _OVERRIDES.pop(name, None)
    else:
        _OVERRIDES[name] = value


def _raw(name: str) -> str:
    return os.environ.get(name, "").strip()


def switch(name: str, default: bool) -> bool:
    """The on/off switch ``name`` from the environment; ``default`` when unset or empty.

    Raises:
        ValueError: the value is not one of :data:`ON_WORDS` / :data:`OFF_WORDS`.

    Examples::

        >>> import os
        >>> os.environ["SMOCAM_EXAMPLE"] = " Yes "
        >>> switch("SMOCAM_EXAMPLE", False)
        True
        >>> os.environ["SMOCAM_EXAMPLE"] = "banana"
        >>> switch("SMOCAM_EXAMPLE", True)
        Traceback (most recent call last):
        ...
        ValueError: SMOCAM_EXAMPLE='banana' is not a valid setting; expected one of 1, on, true, yes (on) or 0, off, false, no (off)
        >>> del os.environ["SMOCAM_EXAMPLE"]
    """
    value = _raw(name).lower()
    if not value:
        return default
    if value in ON_WORDS:
        return True
    if value in OFF_WORDS:
        return False
    raise ValueError(f"{name}={_raw(name)!r} is not a valid setting; expected one of {', '.join(ON_WORDS)} (on) "
                     f"or {', '.join(OFF_WORDS)} (off)")


def kernel_tuning() -> str:
    """``SMOCAM_KERNEL_TUNING`` as a mode: ``"first"`` (on, the default), ``"fastest"`` or ``"off"`` (a process
    override first, :func:`set_override`)."""
    return _OVERRIDES[KERNEL_TUNING] if KERNEL_TUNING in _OVERRIDES else _kernel_tuning_word()


def _kernel_tuning_word() -> str:
    value = _raw(KERNEL_TUNING).lower()
    if not value or value in ON_WORDS or value == "first":
        return "first"
    if value in OFF_WORDS:
        return "off"
    if value == "fastest":
        return "fastest"
    raise ValueError(f"{KERNEL_TUNING}={_raw(KERNEL_TUNING)!r} is not a valid setting; expected first or one of "
                     f"{', '.join(ON_WORDS)} (on), fastest, or one of {', '.join(OFF_WORDS)} (off)")


def reuse_splits() -> bool:
    """``SMOCAM_REUSE_SPLITS``: whether traced splits and model copies are reused across calls (default on; a
    process override first, :func:`set_override`)."""
    return bool(_OVERRIDES[REUSE_SPLITS]) if REUSE_SPLITS in _OVERRIDES else switch(REUSE_SPLITS, True)


def plan_cache_path() -> Optional[str]:
    """``SMOCAM_PLAN_CACHE``: the plan cache's file name, or None (unset, empty, an off word or ``none``).

    An on word is refused: the switch needs a file name to be on.
    """
    value = _raw(PLAN_CACHE)
    if not value or value.lower() in OFF_WORDS or value.lower() == "none":
        return None
    if value.lower() in ON_WORDS:
        raise ValueError(f"{PLAN_CACHE}={value!r} is not a valid setting; expected a file name for the kernel plan "
                         f"cache, or one of {', '.join(OFF_WORDS)}, none (off)")
    return value


def check_environment() -> None:
    """Parse every switch once (SMOCAM calls this at the start of each call): a bad word fails at once, whether
    or not this call would have read it (a process override does not hide a bad word)."""
    _kernel_tuning_word()
    switch(REUSE_SPLITS, True)
    plan_cache_path()
