"""A small cache of compiled training programs, so that calling ``fit``, ``evaluate`` or
``predict`` again with the same model, loss, optimizer and metrics does not compile again.

Keys hold the objects the user passed (the model's ``apply`` function, the loss, the optimizer,
...), compared by identity for functions, so a key stays valid while its entry lives; arguments
that cannot be hashed simply bypass the cache. The least recently used of more than
:data:`SIZE` entries is dropped (with its compiled code).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

__all__ = ["SIZE", "cached", "clear", "freeze_key"]

#: How many entries are kept: a program and each of its compiled loops (step, scan, summary,
#: evaluation, ...) take one each, so this keeps about a dozen models' programs, enough for a
#: comparison of several models trained in turn without compiling any of them again.
SIZE = 64

_entries: collections.OrderedDict = collections.OrderedDict()


def freeze_key(value: Any) -> Any:
    """Lists (of metric names, freeze patterns) as tuples, so that they can be part of a key."""
    if isinstance(value, list):
        return tuple(freeze_key(v) for v in value)
    return value


def cached(key: Any, build: Callable[[], Any]) -> Any:
    """``build()``, reused for an equal ``key``."""
    try:
        hash(key)
    except TypeError:
        return build()
    if key in _entries:
        _entries.move_to_end(key)
        return _entries[key]
    value = build()
    _entries[key] = value
    while len(_entries) > SIZE:
        _entries.popitem(last=False)
    return value


def clear() -> None:
    """Drops every cached program."""
    _entries.clear()
