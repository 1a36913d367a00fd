"""MultiHeadAttention's two lowerings: ``jax.nn.dot_product_attention`` ("reference") and the written-out
einsums ("fast", what "auto" runs on the CPU) agree to float32 rounding, forward and gradients, with masks,
causal, a bias, grouped heads, dropout and the decode cache; and "auto" picks the fast one on the CPU.

The float32 tests of test_attention.py run under "auto"; the float64 NumPy reference is checked here
against the reference lowering too, so each lowering is compared with an independent statement.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from funcnet.layers import set_lowering
from tests import references_attention as ref

# The logits of jax.nn.dot_product_attention, grouped as (N, K, H // K, T, S) for the test below (N=2, K=2,
# H=4, T=S=3): the written-out lowering's logits are (N, H, T, S).
GROUPED_LOGITS = "tensor<2x2x2x3x3xf32>"

MASK = np.array([[True, True, False, True, True], [False, False, False, False, False]])  # example 1: no keys

CASES = {
    "padding mask, all-masked row": ({"num_heads": 2, "key_size": 4, "mask": "m"}, {"m": MASK}),
    "causal, grouped heads, rotary": ({"num_heads": 4, "key_size": 2, "num_kv_heads": 2, "causal": True,
                                       "rotary": True}, {}),
    "per-query mask and causal": ({"num_heads": 2, "key_size": 3, "causal": True, "mask": "m"},
                                  {"m": np.random.default_rng(3).random((2, 5, 5)) < 0.6}),
    "bias, multi-query": ({"num_heads": 3, "key_size": 2, "num_kv_heads": 1, "bias": "b"},
                          {"b": np.random.default_rng(4).standard_normal((1, 3, 5, 5)).astype(np.float32)}),
}


def _values_and_grads(layer, params, x, context, mode, key=None):
    """``(y, d(sum(y * probe)) / d(params, x))`` traced and run under lowering ``mode``."""
    probe = jnp.asarray(np.random.default_rng(9).standard_normal((*x.shape[:2], 6)), jnp.float32)

    def f(p, xx):
        return layer.apply(p, {}, xx, context=context, key=key, train=key is not None)[0]

    @jax.jit  # one compilation for the values and the gradients
    def values_and_grads(p, xx):
        y, pullback = jax.vjp(f, p, xx)
        return y, pullback(probe)

    with set_lowering(mode):
        return values_and_grads(params, x)


@pytest.mark.parametrize("case", list(CASES))
def test_both_lowerings_agree_with_each_other_and_the_float64_reference(case):
    options, context = CASES[case]
    layer = fn.MultiHeadAttention(out_features=6, **options)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 5, 7)), jnp.float32)
    _, params, _ = layer.init(jax.random.key(0), fn.spec_of(x), context=fn.spec_of(context))
    results = {mode: _values_and_grads(layer, params, x, context, mode) for mode in ("reference", "fast")}
    side = {"mask": context.get("m"), "bias": context.get("b")}
    expected = ref.attention(jax.tree.map(lambda a: np.asarray(a, np.float64), params), {},
                             np.asarray(x, np.float64), causal=options.get("causal", False),
                             rotary=options.get("rotary", False), **{k: v for k, v in side.items() if v is not None})
    for mode, (y, _) in results.items():
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5, err_msg=mode)
    for fast, reference in zip(jax.tree.leaves(results["fast"]), jax.tree.leaves(results["reference"]), strict=True):
        np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=1e-5)


def test_dropout_gives_the_same_draws_in_both_lowerings():
    layer = fn.MultiHeadAttention(2, 3, num_kv_heads=1, dropout=0.5, out_features=6)
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 5, 4)), jnp.float32)
    _, params, _ = layer.init(jax.random.key(0), fn.spec_of(x))
    fast = _values_and_grads(layer, params, x, None, "fast", key=jax.random.key(5))
    reference = _values_and_grads(layer, params, x, None, "reference", key=jax.random.key(5))
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_decoding_with_the_cache_agrees_across_lowerings():
    layer = fn.MultiHeadAttention(4, 4, num_kv_heads=2, causal=True, rotary=True)
    x = jax.random.normal(jax.random.key(1), (2, 4, 8))
    _, params, _ = layer.init(jax.random.key(0), fn.spec((None, 4, 8)))
    _, _, cache = layer.init(jax.random.key(0), fn.spec((None, 1, 8)),
                             context={"decode": jax.ShapeDtypeStruct((2, 6), jnp.int32)})
    outputs = {}
    for mode in ("reference", "fast"):
        with set_lowering(mode):
            step = jax.jit(lambda state, x_t, t: layer.apply(params, state, x_t, context={"decode": t}))
            state, steps = cache, []
            for t in range(4):  # one compilation: every step has length 1
                y_t, state = step(state, x[:, t:t + 1], t)
                steps.append(y_t)
        outputs[mode] = jnp.concatenate(steps, axis=1)
    np.testing.assert_allclose(outputs["fast"], outputs["reference"], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks what runs on the CPU")
def test_auto_runs_the_written_out_attention_on_the_cpu_and_dot_product_attention_elsewhere():
    layer = fn.MultiHeadAttention(4, 2, num_kv_heads=2)
    x = jnp.asarray(np.random.default_rng(6).standard_normal((2, 3, 5)), jnp.float32)
    _, params, _ = layer.init(jax.random.key(0), fn.spec_of(x))

    def forward(p, xx):
        return layer.apply(p, {}, xx)[0]

    grad = jax.grad(lambda p, xx: jnp.sum(forward(p, xx) ** 2), argnums=(0, 1))
    texts, results = {}, {}
    for mode in ("auto", "fast", "reference"):
        with set_lowering(mode):
            texts[mode] = jax.jit(forward).lower(params, x).as_text()
            results[mode] = jax.jit(grad)(params, x)
    assert [GROUPED_LOGITS in texts[mode] for mode in ("auto", "fast", "reference")] == [False, False, True]
    for_cuda = jax.export.export(jax.jit(forward), platforms=["cuda"])(params, x).mlir_module()
    assert GROUPED_LOGITS in for_cuda
    # The gradient's conditional keeps both branches in the text: compare the numbers instead. The
    # lowerings round differently, so bitwise equality with "fast" shows which one ran.
    for auto, fast in zip(jax.tree.leaves(results["auto"]), jax.tree.leaves(results["fast"]), strict=True):
        np.testing.assert_array_equal(auto, fast)
    query_grad = (results["auto"][0]["query"]["w"], results["reference"][0]["query"]["w"])
    assert not np.array_equal(*query_grad)
    np.testing.assert_allclose(*query_grad, rtol=1e-5, atol=1e-6)
