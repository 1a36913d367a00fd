"""The chain of format migrations: each turns a checkpoint manifest of one format version into the next.

A checkpoint is read at the version it was written in: its manifest is validated by the rules of
:mod:`funcnet.checkpoint.format`, then passed through ``MIGRATIONS[v]`` for ``v`` from its version
up to :data:`~funcnet.checkpoint.format.FORMAT_VERSION`. Each step is a pure function of the
manifest (it returns a new one and reads no file), so a checkpoint on disk is never changed.

A step may rename or move tree entries (edit the skeleton and the entries' ``path``) and may add
entries whose value it knows: such an entry carries ``"value"`` (a number, broadcast to its
``shape``) instead of ``file``, ``nbytes`` and ``sha256``; entries read from disk can never carry
one (the manifest's validation refuses unknown fields).

Adding a step (for format version ``n + 1``): write ``migrate_n_to_n1(manifest) -> manifest``
here, register it as ``MIGRATIONS[n]``, raise ``FORMAT_VERSION`` to ``n + 1`` and add a test that
restores a version-``n`` checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from funcnet.training.migrate import migrate_guard_layout

_FLOATING = ("float16", "bfloat16", "float32", "float64")


def _dict_nodes(node: dict) -> Iterator[dict]:
    """Every dict node of a (validated) tree skeleton, depth first."""
    if node["t"] == "dict":
        yield node
    for child in node.get("c", []):
        yield from _dict_nodes(child)


def _mentions(description: Any, kind: str) -> bool:
    """Whether an architecture description holds a layer of this kind."""
    if isinstance(description, dict):
        return description.get("kind") == kind or any(_mentions(v, kind) for v in description.values())
    if isinstance(description, list):
        return any(_mentions(v, kind) for v in description)
    return False


def _batchnorm_statistics(node: dict, entries: dict[str, dict]) -> tuple[str, dict] | None:
    """``(path prefix, mean entry)`` if a dict node is a version-1 BatchNorm state: exactly
    ``mean`` and ``var``, two floating arrays of one shape ``(C,)``."""
    if sorted(node["keys"]) != ["mean", "var"] or any(c["t"] != "leaf" for c in node["c"]):
        return None
    mean, var = (entries[c["path"]] for _, c in sorted(zip(node["keys"], node["c"], strict=True)))
    if (mean["kind"] not in ("jax", "numpy") or mean["dtype"] not in _FLOATING or len(mean["shape"]) != 1
            or (var["kind"], var["dtype"], var["shape"]) != (mean["kind"], mean["dtype"], mean["shape"])
            or not mean["path"].endswith("['mean']")):
        return None
    return mean["path"][:-len("['mean']")], mean


def migrate_1_to_2(manifest: dict) -> dict:
    """Format 1 to 2: BatchNorm's state gains ``debias``; the guard's counters leave ``opt_state``.

    Version-1 BatchNorm averages started at mean 0 and variance 1 and were used as they are;
    ``debias = 1`` keeps exactly that (eval mode divides by 1, and training keeps it at 1). The
    state is found as every dict of exactly ``mean`` and ``var`` floating ``(C,)`` arrays, unless
    the recorded architecture shows there is no BatchNorm. A version-1 ``opt_state`` was optax's
    ``ApplyIfFiniteState``; it becomes :class:`funcnet.training.OptState` (see
    :func:`funcnet.training.migrate_guard_layout`).
    """
    manifest = migrate_guard_layout(manifest)
    architecture = manifest.get("architecture")
    if architecture is None or _mentions(architecture, "BatchNorm"):
        entries = {e["path"]: e for e in manifest["arrays"]}
        for node in list(_dict_nodes(manifest["tree"])):
            found = _batchnorm_statistics(node, entries)
            if found is None:
                continue
            prefix, mean = found
            path = prefix + "['debias']"
            node["keys"].append("debias")
            node["c"].append({"t": "leaf", "path": path})
            manifest["arrays"].append({"path": path, "kind": mean["kind"], "dtype": mean["dtype"], "shape": [],
                                       "value": 1.0})
    manifest["format_version"] = 2
    return manifest


#: ``MIGRATIONS[v]`` turns a version-``v`` manifest into a version-``v + 1`` one.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: migrate_1_to_2}
