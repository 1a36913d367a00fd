"""From the optimizer-state layout of older funcnet versions to :class:`funcnet.training.OptState`.

Up to checkpoint format version 1, ``make_optimizer`` wrapped the optimizer in
``optax.apply_if_finite`` and the train step's ``opt_state`` was its ``ApplyIfFiniteState``
``(notfinite_count, last_finite, total_notfinite, inner_state)`` (or the bare optax state with
``skip_nonfinite=False``). Now it is ``OptState(optimizer=inner_state, guard=GuardState(bad_run=
notfinite_count, skipped=total_notfinite))``; ``last_finite`` is dropped (the step returns it).

Two pure functions do the conversion: :func:`upgrade_opt_state` on an opt_state in memory, and
:func:`migrate_guard_layout` on a checkpoint manifest (its tree skeleton and array entries), for
the checkpoint format's chain of migrations. Neither touches the arrays' data.
"""

from __future__ import annotations

import copy
from typing import Any

import jax.numpy as jnp

from funcnet.training.guard import GuardState, OptState

__all__ = ["migrate_guard_layout", "upgrade_opt_state"]

#: The fields of optax's ``ApplyIfFiniteState``, the old layout's outer node.
OLD_FIELDS = ("notfinite_count", "last_finite", "total_notfinite", "inner_state")


def _is_old_guard_state(node: Any) -> bool:
    return isinstance(node, tuple) and tuple(getattr(type(node), "_fields", ())) == OLD_FIELDS


def upgrade_opt_state(opt_state: Any) -> OptState:
    """The :class:`OptState` for an opt_state of the old layout (see the module docstring).

    Args:
        opt_state: an ``ApplyIfFiniteState`` (optax's class, or the stand-in namedtuple of the
            same name and fields a checkpoint restores without templates), or a bare optax state
            (counters start at 0), or already an :class:`OptState` (returned as it is).

    Returns:
        An :class:`OptState`; its arrays are those of ``opt_state`` (not copied).
    """
    if isinstance(opt_state, OptState):
        return opt_state
    if _is_old_guard_state(opt_state):
        guard = GuardState(jnp.asarray(opt_state.notfinite_count, jnp.int32),
                           jnp.asarray(opt_state.total_notfinite, jnp.int32))
        return OptState(opt_state.inner_state, guard)
    return OptState(opt_state, GuardState.zeros())


def _retarget(node: dict, old_prefix: str, new_prefix: str, renamed: dict[str, str]) -> None:
    """Rewrites, in place, the leaf paths under ``node`` that start with ``old_prefix``."""
    if node.get("t") == "leaf":
        path = node["path"]
        if path.startswith(old_prefix):
            node["path"] = renamed[path] = new_prefix + path[len(old_prefix):]
        return
    for child in node.get("c", ()):
        _retarget(child, old_prefix, new_prefix, renamed)


def _node_path(node: dict) -> str | None:
    """The path of ``node`` in the tree, read from its first leaf (None if it has no leaf)."""
    if node.get("t") == "leaf":
        return node["path"]
    for child in node.get("c", ()):
        found = _node_path(child)
        if found is not None:
            return found
    return None


def _migrate_node(node: dict, renamed: dict[str, str], dropped: set[str]) -> dict:
    """The skeleton node with every ``ApplyIfFiniteState`` in it replaced by an ``OptState``."""
    kind = node.get("t")
    if kind == "namedtuple" and node.get("name") == "ApplyIfFiniteState" and tuple(node["fields"]) == OLD_FIELDS:
        count, last, total, inner = node["c"]
        inner = _migrate_node(inner, renamed, dropped)
        count_path = _node_path(count)
        prefix = count_path[: -len(".notfinite_count")] if count_path else ""
        _retarget(inner, prefix + ".inner_state", prefix + ".optimizer", renamed)
        _retarget(count, prefix + ".notfinite_count", prefix + ".guard.bad_run", renamed)
        _retarget(total, prefix + ".total_notfinite", prefix + ".guard.skipped", renamed)
        last_path = _node_path(last)
        if last_path is not None:
            dropped.add(last_path)
        guard = {"t": "namedtuple", "name": GuardState.__name__, "module": GuardState.__module__,
                 "fields": list(GuardState._fields), "c": [count, total]}
        return {"t": "namedtuple", "name": OptState.__name__, "module": OptState.__module__,
                "fields": list(OptState._fields), "c": [inner, guard]}
    if "c" in node:
        node = dict(node, c=[_migrate_node(child, renamed, dropped) for child in node["c"]])
    return node


def migrate_guard_layout(manifest: dict) -> dict:
    """A checkpoint manifest with the old guard layout rewritten to :class:`OptState` (a new dict).

    Every ``ApplyIfFiniteState`` node of ``manifest["tree"]`` becomes an ``OptState`` node whose
    ``optimizer`` is the old ``inner_state`` and whose ``guard`` holds the old ``notfinite_count``
    (as ``bad_run``) and ``total_notfinite`` (as ``skipped``); the array entries follow their
    leaves to the new paths (``['opt_state'].inner_state[0].mu`` becomes
    ``['opt_state'].optimizer[0].mu``) and the ``last_finite`` entry is dropped. The files named
    by the entries are unchanged, so their checksums still hold. A manifest without the old
    layout comes back equal. Bare optax states (saved with ``skip_nonfinite=False``) cannot gain
    counters here, as a manifest cannot create arrays: restore them and call
    :func:`upgrade_opt_state`.
    """
    manifest = copy.deepcopy(manifest)
    renamed: dict[str, str] = {}
    dropped: set[str] = set()
    manifest["tree"] = _migrate_node(manifest["tree"], renamed, dropped)
    arrays = []
    for entry in manifest.get("arrays", []):
        if entry["path"] in dropped:
            continue
        path = entry["path"]
        while path in renamed:  # a guard nested in another's inner state is renamed twice
            path = renamed[path]
        arrays.append(dict(entry, path=path))
    manifest["arrays"] = arrays
    return manifest
