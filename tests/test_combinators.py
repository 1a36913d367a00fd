"""Combinators route params, state, key and the train flag to every child, at any depth."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from funcnet.core import Layer


def Probe(name=None):
    """A custom layer that reports what it received: its key's data, the train flag, and a call count."""

    def init(key, spec, *, context=None):
        return spec, {}, {"calls": jnp.zeros((), jnp.int32)}

    def apply(params, state, x, *, key=None, train=False, context=None):
        seen = jnp.zeros(2, jnp.uint32) if key is None else jax.random.key_data(key)
        return (x, seen, jnp.asarray(train)), {"calls": state["calls"] + 1}

    return Layer(init, apply, "Probe", {}, (), name)


def Take(name=None):
    """Passes on the first element of a probe's output tuple."""

    def init(key, spec, *, context=None):
        return spec, {}, {}

    def apply(params, state, x, *, key=None, train=False, context=None):
        return x[0], state

    return Layer(init, apply, "Take", {}, (), name)


def test_serial_names_children_by_kind_and_position(key):
    model = fn.serial(fn.Dense(4), fn.Relu(), fn.Dense(3), fn.named("head", fn.Dense(2)))
    _, params, state = model.init(key, (None, 5))
    assert list(params) == ["dense_0", "dense_1", "head"]
    assert state == {}
    assert params["dense_0"]["w"].shape == (5, 4) and params["head"]["w"].shape == (3, 2)


def test_serial_accepts_a_list_and_sequential_is_the_same(key):
    layers = [fn.Dense(4), fn.Relu(), fn.Dense(2)]
    x = jnp.ones((3, 5))
    a, b, c = fn.serial(*layers), fn.serial(layers), fn.Sequential(layers)
    outs = [m.apply(m.init(key, x.shape)[1], {}, x)[0] for m in (a, b, c)]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_duplicate_names_are_rejected():
    with pytest.raises(ValueError, match=r"unique within a container; repeated: \['x'\]"):
        fn.serial(fn.Dense(2, name="x"), fn.Dense(2, name="x"))


def test_a_non_layer_argument_is_a_clear_error():
    with pytest.raises(TypeError, match=r"argument 1 is a function, not a Layer.*`Relu\(\)`"):
        fn.serial(fn.Dense(2), fn.Relu)


def test_every_child_gets_its_own_folded_key_at_any_depth(key):
    inner = fn.serial(Probe(), Take(), Probe())
    model = fn.serial(Probe(), Take(), inner)
    _, params, state = model.init(key, (None, 1))
    (_, seen, _), _ = model.apply(params, state, jnp.ones((1, 1)), key=key, train=True)
    expected = jax.random.fold_in(jax.random.fold_in(key, 2), 2)  # inner is child 2, its last probe child 2
    np.testing.assert_array_equal(seen, jax.random.key_data(expected))

    first = fn.serial(Probe())
    (_, seen_first, _), _ = first.apply({}, {"probe_0": state["probe_0"]}, jnp.ones((1, 1)), key=key)
    np.testing.assert_array_equal(seen_first, jax.random.key_data(jax.random.fold_in(key, 0)))


def test_two_dropouts_draw_different_masks_and_are_reproducible(key):
    model = fn.branch(fn.Dropout(0.5), fn.Dropout(0.5))
    x = jnp.ones((1, 1000))
    (a, b), _ = model.apply({}, {}, x, key=key, train=True)
    (a2, _), _ = model.apply({}, {}, x, key=key, train=True)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, a2)


@pytest.mark.parametrize("train", [False, True])
def test_train_flag_and_state_reach_every_child_through_every_combinator(key, train):
    model = fn.serial(
        fn.residual(Probe(), Take()),
        fn.branch(fn.serial(Probe(), Take()), Probe()),
        fn.parallel(Take(), fn.serial(Take(), Probe())),
    )
    _, params, state = model.init(key, (None, 2))
    counts = jax.tree_util.tree_leaves(state)
    assert len(counts) == 4
    (_, (_, _seen, flag)), new_state = model.apply(params, state, jnp.ones((3, 2)), key=key, train=train)
    assert bool(flag) is train
    assert all(int(c) == 1 for c in jax.tree_util.tree_leaves(new_state))
    assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)


def test_parallel_branch_and_fan_in_match_numpy(key):
    model = fn.serial(fn.branch(fn.Dense(3), fn.Dense(2)), fn.FanInConcat())
    out_shape, params, _ = model.init(key, (None, 4))
    assert out_shape == fn.spec((None, 5))
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    y, _ = model.apply(params, {}, x)
    p = params["branch_0"]
    expected = np.concatenate([x @ p[name]["w"] + p[name]["b"] for name in ("dense_0", "dense_1")], -1)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)

    pair = fn.serial(fn.parallel(fn.Relu(), fn.Tanh()), fn.FanInSum())
    (a, b) = np.float32([[-1.0, 2.0]]), np.float32([[0.5, -0.5]])
    y, _ = pair.apply({}, {}, (a, b))
    np.testing.assert_allclose(y, np.maximum(a, 0) + np.tanh(b), rtol=1e-6)
    assert pair.init(key, ((None, 2), (None, 2)))[0] == fn.spec((None, 2))


def test_fan_out_copies_its_input(key):
    shape, _, _ = fn.FanOut(3).init(key, (None, 2))
    assert shape == (fn.spec((None, 2)),) * 3
    x = jnp.arange(4.0).reshape(2, 2)
    ys, _ = fn.FanOut(3).apply({}, {}, x)
    assert len(ys) == 3 and all(np.array_equal(y, x) for y in ys)


def test_select_keeps_one_entry_of_a_tuple_or_dict(key):
    a, b = np.float32([[1.0, 2.0]]), np.float32([[3.0], [4.0]])
    assert fn.Select(1).init(key, ((None, 2), (None, 1)))[0] == fn.spec((None, 1))
    assert fn.Select(-2).apply({}, {}, (a, b))[0] is a
    assert fn.Select("mask").apply({}, {}, {"x": a, "mask": b})[0] is b
    # The use it exists for: an LSTM's final state (h, c) out of its (outputs, state).
    lstm_state = fn.serial(fn.LSTM(3, return_state=True), fn.Select(1))
    out_spec, params, _ = lstm_state.init(key, (None, 5, 2))
    assert out_spec == (fn.spec((None, 3)), fn.spec((None, 3)))
    x = np.random.default_rng(0).standard_normal((2, 5, 2)).astype(np.float32)
    (h, c), _ = lstm_state.apply(params, {}, x)
    (_, (expected_h, expected_c)), _ = fn.LSTM(3, return_state=True).apply(params["lstm_0"], {}, x)
    np.testing.assert_array_equal(h, expected_h)
    np.testing.assert_array_equal(c, expected_c)


@pytest.mark.parametrize(("entry", "spec", "message"), [
    (2, ((None, 2), (None, 1)), r"expected a tuple or list input with an entry at position 2, got 2 entries"),
    (0, (None, 2), (r"expected a tuple or list input with an entry at position 0, got \(N, 2\) float32"
                    r"(.|\n)*Select\('name'\)")),
    ("mask", {"x": (None, 2)}, r"expected a dict input with the key 'mask', got a dict with keys \['x'\]"),
])
def test_select_errors_name_what_it_got(key, entry, spec, message):
    with pytest.raises(fn.ShapeError, match=message):
        fn.Select(entry).init(key, spec)


def test_select_refuses_an_entry_that_is_not_a_position_or_key():
    with pytest.raises(ValueError, match=r"Select: `entry` must be a position \(int\) or a dict key \(str\), got 1.5"):
        fn.Select(1.5)


def test_residual_adds_the_body_to_the_input_or_the_shortcut(key):
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    block = fn.residual(fn.Dense(4), fn.Relu())
    _, params, _ = block.init(key, (None, 4))
    assert list(params) == ["dense_0"]
    y, _ = block.apply(params, {}, x)
    np.testing.assert_allclose(y, np.maximum(x @ params["dense_0"]["w"] + params["dense_0"]["b"], 0) + x, rtol=1e-5)

    projected = fn.residual(fn.Dense(2), shortcut=fn.Dense(2, use_bias=False))
    _, params, _ = projected.init(key, (None, 4))
    assert sorted(params) == ["dense_0", "shortcut"]
    y, _ = projected.apply(params, {}, x)
    expected = x @ params["dense_0"]["w"] + params["dense_0"]["b"] + x @ params["shortcut"]["w"]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_residual_with_mismatched_shapes_says_to_add_a_shortcut(key):
    with pytest.raises(fn.ShapeError, match=r"body's output \(N, 2\) cannot be added to the shortcut's \(N, 4\)"
                       r"(.|\n)*shortcut="):
        fn.residual(fn.Dense(2)).init(key, (None, 4))


def test_fan_in_errors_name_the_shapes(key):
    with pytest.raises(fn.ShapeError, match=r"share one shape to be added, got \(\(N, 2\) float32, \(N, 3\) float32\)"):
        fn.FanInSum().init(key, ((None, 2), (None, 3)))
    with pytest.raises(fn.ShapeError, match=r"agree on every axis but -1, got \(N, 2, 3\), \(N, 4, 3\)"):
        fn.FanInConcat().init(key, ((None, 2, 3), (None, 4, 3)))
    with pytest.raises(fn.ShapeError, match=r"expected a tuple of 2 inputs, got \(3, 2\) float32(.|\n)*FanOut"):
        fn.parallel(fn.Relu(), fn.Relu()).apply({}, {}, jnp.ones((3, 2)))


def test_a_whole_model_is_per_example(key):
    model = fn.serial(fn.Dense(8, activation="gelu"), fn.branch(fn.Dense(3), fn.Identity()), fn.parallel(
        fn.Relu(), fn.Dense(3)), fn.FanInSum())
    _, params, state = model.init(key, (None, 5))
    x = np.random.default_rng(2).standard_normal((7, 5)).astype(np.float32)
    batched, _ = model.apply(params, state, x)
    one_by_one = np.concatenate([model.apply(params, state, x[i:i + 1])[0] for i in range(7)])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5, atol=1e-6)
