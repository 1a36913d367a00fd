"""Crafted manifests (with their SHA-256 recomputed, as an attacker could) are refused with a
CheckpointCorruptError naming manifest.json and the entry, never a raw TypeError or ValueError
from NumPy, JAX or ``collections`` (issue 11, item 3)."""

from __future__ import annotations

import re
from typing import NamedTuple

import jax
import numpy as np
import pytest

from funcnet import checkpoint as ck
from tests.checkpoint_helpers import edit_manifest


class Pair(NamedTuple):
    first: np.ndarray
    second: np.ndarray


def _entry(manifest: dict, tree_path: str) -> dict:
    return next(e for e in manifest["arrays"] if e["path"] == tree_path)


def _node(manifest: dict, kind: str) -> dict:
    """The first node of the tree skeleton of this kind (depth first)."""
    pending = [manifest["tree"]]
    while pending:
        node = pending.pop(0)
        if node["t"] == kind:
            return node
        pending.extend(node.get("c", []))
    raise AssertionError(f"no {kind} node")


@pytest.fixture
def saved(tmp_path):
    tree = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "step": 7, "key": jax.random.key(3),
            "pair": Pair(np.zeros(2, np.float32), np.ones(2, np.float32))}
    return ck.save(tmp_path / "c", tree)


def _set(tree_path: str, **fields):
    def edit(manifest: dict) -> None:
        _entry(manifest, tree_path).update(fields)

    return edit


def _repeat_field(manifest: dict) -> None:
    _node(manifest, "namedtuple")["fields"] = ["first", "first"]


def _repeat_key(manifest: dict) -> None:
    node = _node(manifest, "dict")
    node["keys"] = ["w"] * len(node["keys"])


def _at(tree_path: str) -> str:
    """The pattern of the entry's name in messages: ``array entry 0 ("['w']")``."""
    return r"array entry \d \(" + re.escape(repr(tree_path)) + r"\): "


AT_W, AT_STEP, AT_KEY = _at("['w']"), _at("['step']"), _at("['key']")

CASES = [
    ("nbytes_float", _set("['w']", nbytes=24.0), AT_W + r"claims 24.0 bytes but shape \[2, 3\] of float32 "
     r"needs 24 \(an integer\)"),
    ("nbytes_string", _set("['w']", nbytes="24"), AT_W + r"claims '24' bytes"),
    ("dtype_list", _set("['w']", dtype=["float32"]), AT_W + r"dtype \['float32'\] is not allowed"),
    ("dtype_object", _set("['w']", dtype={"descr": "<f4"}), AT_W + r"dtype \{'descr': '<f4'\} is not allowed"),
    ("shape_floats", _set("['w']", shape=[2.0, 3]), AT_W + r"shape \[2.0, 3\] is not a list of non-negative"),
    ("kind_list", _set("['w']", kind=["jax"]), AT_W + r"unknown kind \['jax'\]"),
    ("python_type_list", _set("['step']", python_type=["int"]),
     AT_STEP + r"a Python number needs python_type in \['bool', 'float', 'int'\] and shape \[\], got \['int'\]"),
    ("python_type_object", _set("['step']", python_type={"int": 1}),
     AT_STEP + r"a Python number needs .* got \{'int': 1\}"),
    ("int_stored_as_complex", _set("['step']", dtype="complex64", nbytes=8),
     AT_STEP + r"a Python int is stored as int64, not complex64"),
    ("key_impl_changed", _set("['key']", key_impl="rbg"),
     AT_KEY + r"a rbg PRNG key has key_dtype 'key<rbg>', got 'key<fry>'"),
    ("key_impl_and_dtype_changed", _set("['key']", key_impl="rbg", key_dtype="key<rbg>"),
     AT_KEY + r"a rbg PRNG key needs uint32 key data of shape key_shape \+ \[4\], got uint32\[2\]"),
    ("key_impl_list", _set("['key']", key_impl=["threefry2x32"]), AT_KEY + r"a PRNG key needs key_impl in"),
    ("numpy_scalar_string", _set("['w']", numpy_scalar="yes"), AT_W + r"numpy_scalar must be true"),
    ("unknown_field", _set("['w']", loader="pickle"), AT_W + r"unknown fields \['loader'\]"),
    ("namedtuple_repeated_field", _repeat_field, r"NamedTuple node 'Pair': the field 'first' is repeated"),
    ("dict_repeated_key", _repeat_key, r"dict node: the key 'w' is repeated"),
]


@pytest.mark.parametrize(("edit", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_crafted_manifest_fields_are_named(saved, edit, message):
    edit_manifest(saved, edit)
    pattern = re.escape(str(saved / "manifest.json")) + ": " + message
    with pytest.raises(ck.CheckpointCorruptError, match=pattern):
        ck.restore(saved)


def test_the_untouched_checkpoint_restores(saved):
    """The fixture itself is valid, so each case above fails only for its own edit."""
    restored = ck.restore(saved).tree
    assert restored["step"] == 7 and isinstance(restored["step"], int)
    assert type(restored["pair"]).__name__ == "Pair"


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg", "unsafe_rbg"])
def test_every_key_implementation_round_trips(tmp_path, impl):
    """The table of key dtypes and word counts agrees with JAX's."""
    key = jax.random.key(5, impl=impl)
    restored = ck.restore(ck.save(tmp_path / impl, {"key": key})).tree["key"]
    assert restored.dtype == key.dtype
    np.testing.assert_array_equal(jax.random.key_data(restored), jax.random.key_data(key))
