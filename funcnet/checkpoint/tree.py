"""Pytrees to and from a JSON skeleton plus leaves keyed by tree path.

The skeleton records the containers (dict, list, tuple, NamedTuple, None); each leaf is an entry
``{"t": "leaf", "path": <jax.tree_util.keystr path>}``. Leaves are arrays (JAX or NumPy), typed
PRNG keys, or Python ``bool``/``int``/``float``; anything else (a custom pytree node, a string, an
object array) is refused at save time, naming its path.

NamedTuples are restored as their original class when it is an attribute of the already-imported
``optax``, ``funcnet`` or ``funcnet.training`` package with the same module, name and fields
(optax's optimizer states, funcnet's ``TrainState``); otherwise as a stand-in ``collections.namedtuple`` with the same
name and fields (names are checked to be plain identifiers first). Nothing is imported and no name from
the file is evaluated.
"""

from __future__ import annotations

import collections
import functools
import keyword
from typing import Any

import jax
import numpy as np
from jax.tree_util import DictKey, GetAttrKey, SequenceKey, keystr

from funcnet.checkpoint.errors import CheckpointCorruptError

_MAX_DEPTH = 200
LEAF_TYPES = (jax.Array, np.ndarray, np.generic, bool, int, float)


def is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and isinstance(getattr(type(x), "_fields", None), tuple)


def path_str(path: tuple) -> str:
    """The tree path as written in checkpoints and messages: ``['params']['dense_0']['w']``."""
    return keystr(path) or "<root>"


def encode(tree: Any) -> tuple[dict, list[tuple[str, Any]]]:
    """Returns ``(skeleton, [(path, leaf), ...])`` for ``tree`` (leaves in skeleton order).

    Raises:
        TypeError: naming the path of an unsupported node or leaf.
    """
    leaves: list[tuple[str, Any]] = []

    def walk(node: Any, path: tuple) -> dict:
        if len(path) > _MAX_DEPTH:
            raise TypeError(f"cannot save the tree: it is nested deeper than {_MAX_DEPTH} levels at {path_str(path)}.")
        if node is None:
            return {"t": "none"}
        if isinstance(node, dict):
            bad = [k for k in node if not isinstance(k, str)]
            if bad:
                raise TypeError(f"cannot save the tree: dict keys must be strings, got {bad[0]!r} at {path_str(path)}.")
            return {"t": "dict", "keys": list(node),
                    "c": [walk(v, path + (DictKey(k),)) for k, v in node.items()]}
        if is_namedtuple(node):
            cls = type(node)
            return {"t": "namedtuple", "name": cls.__name__, "module": cls.__module__, "fields": list(cls._fields),
                    "c": [walk(v, path + (GetAttrKey(f),)) for f, v in zip(cls._fields, node, strict=True)]}
        if type(node) in (list, tuple):
            return {"t": type(node).__name__, "c": [walk(v, path + (SequenceKey(i),)) for i, v in enumerate(node)]}
        if isinstance(node, LEAF_TYPES):
            leaves.append((path_str(path), node))
            return {"t": "leaf", "path": path_str(path)}
        raise TypeError(
            f"cannot save the tree: {type(node).__name__} at {path_str(path)} is not supported; checkpoints hold "
            "dicts, lists, tuples, NamedTuples and None, with arrays, PRNG keys and Python numbers as leaves."
        )

    skeleton = walk(tree, ())
    return skeleton, leaves


def flatten_with_paths(tree: Any) -> tuple[list[tuple[str, Any]], Any]:
    """``jax.tree_util.tree_flatten_with_path`` with paths as strings (``None`` is an empty node)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [(path_str(path), leaf) for path, leaf in leaves], treedef


# --------------------------------------------------------------------------------------------
# Rebuilding a tree from the skeleton


def _identifier(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
        raise CheckpointCorruptError(f"{what} {name!r} is not a plain identifier.")
    return name


def _unique(names: list[str], node: str, what: str) -> None:
    repeated = sorted(n for n, count in collections.Counter(names).items() if count > 1)
    if repeated:
        raise CheckpointCorruptError(f"{node}: the {what} {repeated[0]!r} is repeated.")


@functools.cache
def _stand_in(name: str, fields: tuple[str, ...]) -> type:
    return collections.namedtuple(name, fields)


def _known_class(name: str, module: Any, fields: tuple[str, ...]) -> type | None:
    """The original NamedTuple class if a trusted, already-imported package exports it."""
    import sys

    for package in ("optax", "funcnet", "funcnet.training"):
        namespace = sys.modules.get(package)
        cls = getattr(namespace, name, None) if namespace is not None else None
        if (isinstance(cls, type) and issubclass(cls, tuple) and cls.__name__ == name
                and getattr(cls, "__module__", None) == module and tuple(getattr(cls, "_fields", ())) == fields):
            return cls
    return None


def leaf_paths(skeleton: Any) -> list[str]:
    """The leaf paths a skeleton refers to, in order (validating its shape on the way)."""
    paths: list[str] = []

    def walk(node: Any, depth: int) -> None:
        if depth > _MAX_DEPTH or not isinstance(node, dict):
            raise CheckpointCorruptError("the tree skeleton is malformed or nested too deeply.")
        kind = node.get("t")
        if kind == "leaf":
            if not isinstance(node.get("path"), str):
                raise CheckpointCorruptError("a tree leaf has no path.")
            paths.append(node["path"])
            return
        if kind == "none":
            return
        children = node.get("c")
        if kind not in ("dict", "list", "tuple", "namedtuple") or not isinstance(children, list):
            raise CheckpointCorruptError(f"unknown tree node {kind!r}.")
        if kind == "dict":
            keys = node.get("keys")
            if not isinstance(keys, list) or len(keys) != len(children) or not all(isinstance(k, str) for k in keys):
                raise CheckpointCorruptError("a dict node's keys do not match its children.")
            _unique(keys, "dict node", "key")
        if kind == "namedtuple":
            name = _identifier(node.get("name"), "NamedTuple name")
            fields = node.get("fields")
            if not isinstance(fields, list) or len(fields) != len(children):
                raise CheckpointCorruptError(f"NamedTuple node {name!r}: its fields do not match its children.")
            for f in fields:
                _identifier(f, f"NamedTuple {name!r} field")
            _unique(fields, f"NamedTuple node {name!r}", "field")
            if node.get("module") is not None and not isinstance(node["module"], str):
                raise CheckpointCorruptError(f"NamedTuple node {name!r}: module {node['module']!r} is not a string.")
        for child in children:
            walk(child, depth + 1)

    walk(skeleton, 0)
    return paths


def build(skeleton: dict, leaves: dict[str, Any], replace: dict[tuple, Any] | None = None) -> Any:
    """Builds the tree a (validated) skeleton describes, taking leaves by path.

    Args:
        skeleton: from :func:`encode`, validated by :func:`leaf_paths`.
        leaves: leaf values by path.
        replace: subtrees to use instead, by the key sequence from the root (``("opt_state",)``).
    """
    replace = replace or {}

    def walk(node: dict, keys: tuple) -> Any:
        if keys in replace:
            return replace[keys]
        kind = node["t"]
        if kind == "leaf":
            return leaves[node["path"]]
        if kind == "none":
            return None
        if kind == "dict":
            return {k: walk(c, keys + (k,)) for k, c in zip(node["keys"], node["c"], strict=True)}
        if kind == "namedtuple":
            fields = tuple(node["fields"])
            cls = _known_class(node["name"], node.get("module"), fields) or _stand_in(node["name"], fields)
            return cls(*(walk(c, keys + (f,)) for f, c in zip(fields, node["c"], strict=True)))
        items = [walk(c, keys + (i,)) for i, c in enumerate(node["c"])]
        return items if kind == "list" else tuple(items)

    return walk(skeleton, ())


def child(skeleton: dict, key: str) -> dict | None:
    """The skeleton of the root's entry ``key`` (a dict key or NamedTuple field), if there is one."""
    names = skeleton.get("keys") if skeleton.get("t") == "dict" else (
        skeleton.get("fields") if skeleton.get("t") == "namedtuple" else None)
    if names is None or key not in names:
        return None
    return skeleton["c"][names.index(key)]
