"""The RNN scan's custom VJP against plain autodiff of the same scan, and what it refuses (forward mode)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from funcnet.layers import _recurrent_scan as rs
from funcnet.layers.recurrent_cells import GRUCell, LSTMCell, SimpleRNNCell, init_cell_params, splits, zero_state

CELLS = {"lstm": LSTMCell(3), "gru": GRUCell(3), "simple": SimpleRNNCell(3)}
N, T, F = 2, 5, 4


def scan_inputs(cell, seed, masked, dropped):
    """Float64 weights, initial state and per-step inputs; a ragged mask and a recurrent-dropout multiplier."""
    rng = np.random.default_rng(seed)
    weights = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape) * 0.5),
                           init_cell_params(cell, jax.random.key(0), F))
    carry = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape)), zero_state(cell, N, jnp.float64))
    xs = {"x": jnp.asarray(rng.standard_normal((T, N, F)))}
    if masked:
        xs["valid"] = jnp.asarray(np.arange(T)[:, None] < np.array([T, 3])[None, :])
    if dropped:
        xs["keep"] = jnp.asarray((rng.random((T, N, cell.units)) > 0.4) / 0.6)
    return weights, carry, xs


def probed(scan, cell, loop, seed):
    """A scalar of the scan's final state and outputs, each weighted by a fixed random probe."""
    rng = np.random.default_rng(seed + 100)

    def loss(weights, carry, x, xs):
        final, outputs = scan(cell, loop, weights, carry, {**xs, "x": x})
        leaves = jax.tree.leaves((final, outputs))
        return sum(jnp.sum(leaf * rng.standard_normal(leaf.shape)) for leaf in leaves)

    return loss


@pytest.mark.parametrize("kind", sorted(CELLS))
@pytest.mark.parametrize(("reverse", "return_sequences", "masked", "dropped", "unroll"), [
    (False, False, False, False, 1), (True, True, True, True, 2),
], ids=["plain", "reverse_sequences_mask_dropout_unroll2"])
def test_custom_vjp_equals_autodiff_of_the_same_scan(kind, reverse, return_sequences, masked, dropped, unroll):
    cell, loop = CELLS[kind], rs.Loop(reverse, unroll, return_sequences)
    assert splits(cell)
    with jax.enable_x64(True):
        weights, carry, xs = scan_inputs(cell, 0, masked, dropped)
        x = xs.pop("x")
        expected_out = rs.scan_plain(cell, loop, weights, carry, {**xs, "x": x})
        got_out = rs.scan_cell(cell, loop, weights, carry, {**xs, "x": x})
        jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12), got_out, expected_out)
        grad = jax.grad(probed(rs.scan_cell, cell, loop, 1), argnums=(0, 1, 2))
        plain_grad = jax.grad(probed(rs.scan_plain, cell, loop, 1), argnums=(0, 1, 2))
        got, expected = jax.jit(grad)(weights, carry, x, xs), jax.jit(plain_grad)(weights, carry, x, xs)
        got, expected = jax.tree.map(np.asarray, (got, expected))
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for path, g, e in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(got), jax.tree.leaves(expected),
                          strict=True):
        assert np.any(e != 0), path[0]
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12, err_msg=jax.tree_util.keystr(path[0]))


def test_layer_gradient_is_the_custom_vjp_and_forward_mode_is_refused():
    layer = fn.LSTM(3)
    _, params, state = layer.init(jax.random.key(0), (None, T, F))
    x = jnp.ones((N, T, F))

    def loss(p):
        return layer.apply(p, state, x)[0].sum()

    assert "custom_vjp_call" in str(jax.make_jaxpr(loss)(params))
    with pytest.raises(TypeError, match=r"can't apply forward-mode autodiff \(jvp\) to a custom_vjp function"):
        jax.jvp(loss, (params,), (params,))
    jax.grad(lambda p: jax.grad(loss)(p)["u"].sum())(params)  # reverse over reverse works


def test_gru_reset_before_keeps_plain_autodiff():
    cell = GRUCell(3, reset_after=False)
    assert not splits(cell)
    loop = rs.Loop(False, 1, True)
    with jax.enable_x64(True):
        weights, carry, xs = scan_inputs(cell, 2, masked=True, dropped=True)
        jaxpr = str(jax.make_jaxpr(lambda w: rs.scan_cell(cell, loop, w, carry, xs))(weights))
    assert "custom_vjp_call" not in jaxpr
