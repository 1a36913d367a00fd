"""Models over pytrees of inputs: dict parallel, leafwise residual and fan-in, errors naming the leaf.

The end-to-end case of issue 12: an image and a metadata vector, trained by fit, checkpointed, and
rebuilt from the architecture JSON without the user's code.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from funcnet import architecture as arch


def dict_model():
    """image (N, 6, 6, 1) and meta (N, 4) -> logits (N, 3), via parallel over a dict then concat."""
    return fn.serial(
        fn.parallel({"image": fn.serial(fn.Conv2D(2, 3, padding="same", activation="relu"), fn.Flatten()),
                     "meta": fn.Dense(3, activation="tanh")}),
        fn.FanInConcat(),
        fn.Dense(3),
    )


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = {"image": rng.standard_normal((n, 6, 6, 1)).astype(np.float32),
         "meta": rng.standard_normal((n, 4)).astype(np.float32)}
    y = (x["meta"][:, 0] > 0).astype(np.int32) + (x["image"].mean((1, 2, 3)) > 0).astype(np.int32)
    return x, y


SPEC = {"image": fn.spec((None, 6, 6, 1)), "meta": fn.spec((None, 4))}


def test_dict_parallel_names_children_by_key_and_gives_a_dict(key):
    model = fn.parallel({"image": fn.Flatten(), "meta": fn.Dense(2)})
    out, params, _ = model.init(key, SPEC)
    assert out == {"image": fn.spec((None, 36)), "meta": fn.spec((None, 2))}
    assert list(params) == ["meta"]
    x, _ = data(5)
    y, _ = model.apply(params, {}, x)
    np.testing.assert_allclose(y["meta"], x["meta"] @ params["meta"]["w"] + params["meta"]["b"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y["image"], x["image"].reshape(5, -1))
    with pytest.raises(fn.ShapeError, match=r"expected a dict of inputs with keys \['image', 'meta'\], got a dict "
                                            r"with keys \['image'\]"):
        model.apply(params, {}, {"image": x["image"]})


def test_dict_model_trains_checkpoints_and_rebuilds_from_json_without_user_code(key, tmp_path):
    model = dict_model()
    out, params, state = model.init(key, SPEC)
    assert out == fn.spec((None, 3))
    x, y = data()
    result = fn.fit(model, params, state, x, y, loss="sparse_categorical_crossentropy", epochs=2, batch_size=16,
                    verbose=0, key=jax.random.key(1))
    assert result.history["loss"][-1] < result.history["loss"][0]
    path = fn.checkpoint.save(tmp_path / "ckpt", {"params": result.params, "state": result.state}, model=model,
                              input_shape=SPEC)
    # The architecture JSON holds the dict's keys as the children's names and the spec with dtypes.
    description = json.loads(arch.to_json(model, SPEC))
    assert description["input_spec"] == {"image": {"shape": [None, 6, 6, 1], "dtype": "float32"},
                                         "meta": {"shape": [None, 4], "dtype": "float32"}}
    assert description["model"]["children"][0]["config"] == {"keys": ["image", "meta"]}
    assert [c["name"] for c in description["model"]["children"][0]["children"]] == ["image", "meta"]
    restored = fn.checkpoint.restore(path)  # no model passed: rebuilt from the JSON
    assert restored.input_spec == SPEC
    rebuilt = restored.model
    expected = fn.predict_fn(model, result.state)(result.params, x)
    got = fn.predict_fn(rebuilt, restored.tree["state"])(restored.tree["params"], x)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_residual_adds_leaf_by_leaf_and_names_the_leaf_that_differs(key):
    block = fn.residual(fn.parallel({"a": fn.Dense(2), "b": fn.Relu()}))
    spec = {"a": fn.spec((None, 2)), "b": fn.spec((None, 3))}
    out, params, _ = block.init(key, spec)
    assert out == spec
    x = {"a": np.ones((2, 2), np.float32), "b": -np.ones((2, 3), np.float32)}
    y, _ = block.apply(params, {}, x)
    p = params["parallel_0"]["a"]
    np.testing.assert_allclose(y["a"], x["a"] @ p["w"] + p["b"] + x["a"], rtol=1e-6)
    np.testing.assert_array_equal(y["b"], x["b"])  # relu(-1) + (-1)
    bad = fn.residual(fn.parallel({"a": fn.Dense(2), "b": fn.Dense(4)}))
    with pytest.raises(fn.ShapeError, match=r"the body's output at output\['b'\] \(N, 4\) cannot be added to the "
                                            r"shortcut's \(N, 3\)"):
        bad.init(key, spec)


def test_fan_in_and_fan_out_work_on_pytrees(key):
    model = fn.serial(fn.FanOut(2), fn.FanInSum())
    spec = {"x": fn.spec((None, 3)), "m": fn.spec((None, 2), "float32")}
    out, _, _ = model.init(key, spec)
    assert out == spec
    x = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "m": np.ones((2, 2), np.float32)}
    y, _ = model.apply({}, {}, x)
    np.testing.assert_array_equal(y["x"], 2 * x["x"])
    concat = fn.FanInConcat()
    out, _, _ = concat.init(key, ({"x": fn.spec((None, 3))}, {"x": fn.spec((None, 5))}))
    assert out == {"x": fn.spec((None, 8))}
    with pytest.raises(fn.ShapeError, match=r"agree on every axis but -1 at x\[i\]\['x'\]"):
        concat.init(key, ({"x": fn.spec((None, 3, 2))}, {"x": fn.spec((None, 5, 1))}))


def test_none_leaves_and_dict_inputs_no_longer_crash_serial(key):
    """Issue 12: a dict input crashed serial with a RecursionError, a None leaf with a TypeError."""
    model = fn.serial(fn.Identity())
    spec = {"x": fn.spec((None, 3)), "unused": None}
    out, _, _ = model.init(key, spec)
    assert out == spec
    with pytest.raises(fn.ShapeError, match=r"Layer 'dense_0' \(Dense, position 0 in its container\): expected one "
                                            r"array as input, got a dict of 1 input: \{'unused': None, 'x': \(N, 3\) "
                                            r"float32\}"):
        fn.serial(fn.Dense(2)).init(key, spec)


def test_spec_helpers(key):
    assert fn.spec((-1, 28, 28, 1)) == jax.ShapeDtypeStruct((None, 28, 28, 1), jnp.float32)
    assert fn.spec_of({"ids": jnp.zeros((4, 7), jnp.int32)}) == {"ids": fn.spec((None, 7), "int32")}
    assert fn.as_spec(((None, 5), [fn.spec((2, 3), bool)])) == (fn.spec((None, 5)), [fn.spec((None, 3), bool)])
    from funcnet.core import traceable

    assert traceable({"a": (None, 3)}, batch_size=2) == {"a": jax.ShapeDtypeStruct((2, 3), jnp.float32)}
    with pytest.raises(fn.ShapeError, match=r"input x\['mask'\] is a str \('no'\), not a spec"):
        fn.as_spec({"mask": "no"})
