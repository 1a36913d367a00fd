"""Helpers for the recurrent tests: random params, float64 copies, and a forward-and-gradient check
of a funcnet function against a float64 NumPy reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tests.test_layers import _numeric_grad


def random_params(layer, input_spec, seed=0, context=None):
    """Params of ``layer`` for ``input_spec`` (a shape or a spec tree), redrawn as N(0, 0.5^2)."""
    _, params, state = layer.init(jax.random.key(seed), input_spec, context=context)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape) * 0.5, a.dtype), params)
    return params, state


def as64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def assert_matches_reference(f, params, x, reference, seed=0):
    """``f(params, x)`` (funcnet, run in float64) against ``reference(params, x)`` (NumPy): the
    outputs at 1e-9, and the gradients of a random projection of them, w.r.t. params and x (any
    pytree of float arrays), against central differences of the reference at sampled coordinates."""
    params, x = as64(params), as64(x)
    expected = reference(params, x)
    with jax.enable_x64(True):
        got = f(params, jax.tree.map(jnp.asarray, x))
        assert jax.tree.structure(jax.tree.map(np.asarray, got)) == jax.tree.structure(expected)
        jax.tree.map(lambda g, e: np.testing.assert_allclose(np.asarray(g), e, rtol=1e-9, atol=1e-9), got, expected)
        rng = np.random.default_rng(seed)
        probes = [rng.standard_normal(e.shape) for e in jax.tree.leaves(expected)]

        def loss(p, xx):
            return sum(jnp.sum(g * probe) for g, probe in zip(jax.tree.leaves(f(p, xx)), probes, strict=True))

        grads = jax.grad(loss, argnums=(0, 1))(params, jax.tree.map(jnp.asarray, x))

    def reference_loss(t):
        outputs = jax.tree.leaves(reference(t["params"], t["x"]))
        return float(sum(np.sum(o * probe) for o, probe in zip(outputs, probes, strict=True)))

    numeric = _numeric_grad(reference_loss, {"params": params, "x": x}, rng)
    got_leaves = jax.tree.leaves({"params": grads[0], "x": grads[1]})
    assert len(got_leaves) == len(numeric)
    for leaf, sampled in zip(got_leaves, numeric, strict=True):
        flat = np.asarray(leaf).reshape(-1)
        for c, value in sampled.items():
            np.testing.assert_allclose(flat[c], value, rtol=1e-5, atol=1e-6)
