"""Messages a person can read: long lists and long texts shortened to a few lines.

One helper for the whole package (error messages, the ``smocam`` command's
error printer): a list of weight names or a printout of a network is never
shown whole.
"""
from __future__ import annotations

from typing import Iterable

__all__ = ["first_line", "shorten_list", "shorten_message", "MAX_ITEMS", "MAX_MESSAGE_CHARS", "MAX_MESSAGE_LINES"]

#: Items :func:`shorten_list` shows before "… and N more".
MAX_ITEMS = 8
#: Longest message :func:`shorten_message` returns (characters, before its "…" tail).
MAX_MESSAGE_CHARS = 600
#: Most lines :func:`shorten_message` keeps.
MAX_MESSAGE_LINES = 4


def shorten_list(items: Iterable, max_items: int = MAX_ITEMS, *, sep: str = ", ", max_item_chars: int = 80) -> str:
    """The first ``max_items`` items joined by ``sep``, then ``"… and N more"``; each item at most ``max_item_chars``.

    Examples::

        >>> shorten_list(range(20), 3)
        '0, 1, 2 … and 17 more'
        >>> shorten_list(["a", "b"])
        'a, b'
    """
    items = [str(v) for v in items]
    shown = [v if len(v) <= max_item_chars else v[: max_item_chars - 1] + "…" for v in items[:max_items]]
    text = sep.join(shown)
    if len(items) > max_items:
        text += f" … and {len(items) - max_items} more"
    return text


def shorten_message(text: str, max_chars: int = MAX_MESSAGE_CHARS, max_lines: int = MAX_MESSAGE_LINES) -> str:
    """``text`` cut to ``max_lines`` non-empty lines and ``max_chars`` characters, saying how much was left out.

    Examples::

        >>> shorten_message("x" * 1000, 10)
        'xxxxxxxxxx … (990 more characters)'
        >>> shorten_message("a\\n\\nb\\nc", max_lines=2)
        'a\\nb … (1 more line)'
    """
    text = str(text).strip()
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    tail = ""
    if len(lines) > max_lines:
        n = len(lines) - max_lines
        lines = lines[:max_lines]
        tail = f" … ({n} more line{'s' if n != 1 else ''})"
    text = "\n".join(lines)
    if len(text) > max_chars:
        n = len(text) - max_chars
        text = text[:max_chars].rstrip()
        tail = f" … ({n} more characters)"
    return text + tail


def first_line(exc: BaseException) -> str:
    r"""The first line of an error's message, or the error's type name when it has none.

    Examples::

        >>> first_line(ValueError("bad value 3\nmore detail"))
        'bad value 3'
        >>> first_line(KeyError())
        'KeyError'
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
