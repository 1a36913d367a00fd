"""Registry-driven checks that every layer keeps the contract in funcnet/core.py."""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from tests.layer_cases import CASES, LayerCase

ids = [case.id for case in CASES]


def make_input(case: LayerCase, rng: np.random.Generator, shape=None, dtype=np.float32) -> np.ndarray:
    shape = case.input_shape if shape is None else shape
    if case.int_input is not None:
        return rng.integers(0, case.int_input, size=shape).astype(np.int32)
    return rng.standard_normal(shape).astype(dtype)


def to_numpy64(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float64), tree)


def build(case: LayerCase, seed: int = 0):
    layer = case.make()
    out_spec, params, state = layer.init(jax.random.key(seed), case.input_spec)
    # Random, non-trivial params and state, so references see more than zeros and ones.
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.standard_normal(a.shape) * 0.5, a.dtype), params)
    state = jax.tree_util.tree_map(lambda a: jnp.asarray(np.abs(rng.standard_normal(a.shape)) + 0.5, a.dtype), state)
    return layer, out_spec, params, state


def test_registry_covers_every_layer():
    covered = {case.make().kind for case in CASES}
    missing = sorted(set(fn.layers.LAYERS) - covered)
    assert not missing, f"layers without a case in tests/layer_cases.py: {missing}"


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_init_spec_matches_apply(case):
    layer, out_spec, params, state = build(case)
    assert isinstance(out_spec, jax.ShapeDtypeStruct) and out_spec.shape[0] is None
    for batch in (case.input_shape[0], 1):
        x = make_input(case, np.random.default_rng(1), (batch,) + case.input_shape[1:])
        y, new_state = layer.apply(params, state, x)
        assert tuple(y.shape) == (batch,) + tuple(out_spec.shape[1:])
        assert y.dtype == out_spec.dtype
        assert fn.spec_of(y) == out_spec
        assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_forward_matches_float64_reference(case):
    layer, _, params, state = build(case)
    x = make_input(case, np.random.default_rng(2), dtype=np.float64)
    with jax.enable_x64(True):
        y, _ = layer.apply(to_numpy64(params), to_numpy64(state), jnp.asarray(x))
        assert y.dtype == (jnp.float64 if case.int_input is None else y.dtype)
    expected = case.reference(to_numpy64(params), to_numpy64(state), x)
    np.testing.assert_allclose(np.asarray(y, np.float64), expected, rtol=1e-9, atol=1e-9)


def _numeric_grad(f, tree, rng, samples=12, eps=1e-6):
    """Central differences of a float64 function at up to ``samples`` coordinates of each leaf."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    grads = []
    for index, leaf in enumerate(leaves):
        coords = rng.choice(leaf.size, size=min(samples, leaf.size), replace=False)
        g = {}
        for c in coords:
            def shifted(delta, index=index, c=c):
                moved = [np.array(l, copy=True) for l in leaves]
                moved[index].reshape(-1)[c] += delta
                return f(jax.tree_util.tree_unflatten(treedef, moved))
            g[int(c)] = (shifted(eps) - shifted(-eps)) / (2 * eps)
        grads.append(g)
    return grads


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_gradients_match_float64_reference(case):
    layer, _, params, state = build(case)
    rng = np.random.default_rng(3)
    x = make_input(case, rng, dtype=np.float64)
    p64, s64 = to_numpy64(params), to_numpy64(state)
    probe = rng.standard_normal(case.reference(p64, s64, x).shape)
    with jax.enable_x64(True):
        def loss(p, xx):
            return jnp.sum(layer.apply(p, s64, xx)[0] * probe)
        argnums = (0,) if case.int_input is not None else (0, 1)
        got = jax.grad(loss, argnums=argnums)(p64, jnp.asarray(x))
    wrt = {"params": p64} if case.int_input is not None else {"params": p64, "x": x}
    expected = _numeric_grad(
        lambda t: float(np.sum(case.reference(t["params"], s64, t.get("x", x)) * probe)), wrt, rng)
    got_leaves = jax.tree_util.tree_leaves({"params": got[0]} if len(got) == 1 else {"params": got[0], "x": got[1]})
    assert len(got_leaves) == len(expected)
    for leaf, sampled in zip(got_leaves, expected, strict=True):
        flat = np.asarray(leaf).reshape(-1)
        for c, value in sampled.items():
            np.testing.assert_allclose(flat[c], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_jit_and_vmap_agree_with_eager(case):
    layer, _, params, state = build(case)
    x = make_input(case, np.random.default_rng(4))
    eager, _ = layer.apply(params, state, x)
    jitted, _ = jax.jit(lambda p, s, xx: layer.apply(p, s, xx))(params, state, x)
    per_example = jax.vmap(lambda xi: layer.apply(params, state, xi[None])[0][0])(x)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(per_example, eager, rtol=1e-5, atol=1e-5)


FLOAT_CASES = [c for c in CASES if c.int_input is None]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("case", FLOAT_CASES, ids=[c.id for c in FLOAT_CASES])
def test_dtype_is_preserved(case, dtype):
    layer, _, params, state = build(case)
    x = jnp.asarray(make_input(case, np.random.default_rng(5)), dtype)
    y, _ = layer.apply(params, state, x)
    assert y.dtype == dtype
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_params_survive_save_and_load(case):
    layer, _, params, state = build(case)
    flat = {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path((params, state))}
    buffer = io.BytesIO()
    np.savez(buffer, **flat)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as loaded:
        restored_leaves = [loaded[jax.tree_util.keystr(path)]
                           for path, _ in jax.tree_util.tree_leaves_with_path((params, state))]
    restored = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure((params, state)), restored_leaves)
    x = make_input(case, np.random.default_rng(6))
    np.testing.assert_array_equal(layer.apply(*restored, x)[0], layer.apply(params, state, x)[0])


@pytest.mark.parametrize("case", [c for c in CASES if c.train_reference is not None],
                         ids=[c.id for c in CASES if c.train_reference is not None])
def test_training_mode_matches_reference(case):
    layer, _, params, state = build(case)
    x = make_input(case, np.random.default_rng(7), dtype=np.float64)
    with jax.enable_x64(True):
        y, new_state = layer.apply(to_numpy64(params), to_numpy64(state), jnp.asarray(x), train=True)
    expected_y, expected_state = case.train_reference(to_numpy64(params), to_numpy64(state), x)
    np.testing.assert_allclose(np.asarray(y), expected_y, rtol=1e-9, atol=1e-9)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, rtol=1e-9, atol=1e-9),
                           new_state, expected_state)
