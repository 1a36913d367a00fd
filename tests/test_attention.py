"""MultiHeadAttention with side inputs (masks, bias), cross-attention, dropout and decode mode, against the
float64 references in references_attention.py; and its errors. Plain configurations are registry cases."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from tests import references_attention as ref


def random_params(layer, input_spec, seed=0, context=None):
    _, params, state = layer.init(jax.random.key(seed), input_spec, context=context)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape) * 0.5, a.dtype), params)
    return params, state


def to64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def numeric_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[index] += eps
        down[index] -= eps
        g[index] = (f(up) - f(down)) / (2 * eps)
    return g


# A key padding mask in which example 1 has no key at all: its rows must come out as zeros.
PADDING = np.array([[True, True, False, True], [False, False, False, False]])


def check_against_reference(layer, x, context, reference, **side):
    """Float32 (through jax.nn.dot_product_attention) and float64 forward, and float64 gradients wrt x.

    ``context`` is what the layer reads; ``side`` (``mask=``, ``bias=``) is the same for the reference.
    """
    params, state = random_params(layer, fn.spec_of(x), context=fn.spec_of(context))
    p64, x64 = to64(params), x.astype(np.float64)
    expected = reference(p64, {}, x64, **side)
    apply = jax.jit(lambda p, xx, c: layer.apply(p, state, xx, context=c)[0])  # one compilation, not one per op
    y32 = apply(params, jnp.asarray(x, jnp.float32), context)
    np.testing.assert_allclose(y32, expected, rtol=1e-5, atol=1e-5)
    probe = np.random.default_rng(9).standard_normal(expected.shape)
    with jax.enable_x64(True):
        context64 = {k: jnp.asarray(v, jnp.float64 if v.dtype != bool else bool) for k, v in context.items()}
        y64 = apply(p64, jnp.asarray(x64), context64)
        got = jax.jit(jax.grad(lambda xx: jnp.sum(apply(p64, xx, context64) * probe)))(jnp.asarray(x64))
    np.testing.assert_allclose(y64, expected, rtol=1e-9, atol=1e-9)
    wanted = numeric_grad(lambda xx: np.sum(reference(p64, {}, xx, **side) * probe), x64)
    np.testing.assert_allclose(got, wanted, rtol=1e-5, atol=1e-6)
    return params, y32


def test_key_padding_mask_and_an_all_masked_row_give_zeros():
    layer = fn.MultiHeadAttention(2, 4, mask="padding_mask")
    x = np.random.default_rng(0).standard_normal((2, 4, 5)).astype(np.float32)
    params, y = check_against_reference(layer, x, {"padding_mask": PADDING}, ref.attention, mask=PADDING)
    # Example 1 attends to nothing: its attention output is zeros, so the layer gives the output bias.
    np.testing.assert_allclose(y[1], np.broadcast_to(params["output"]["b"], (4, 5)), rtol=1e-6)
    assert np.all(np.isfinite(y))


def test_per_query_mask_combined_with_causal():
    layer = fn.MultiHeadAttention(4, 2, num_kv_heads=2, causal=True, mask="m")
    rng = np.random.default_rng(1)
    mask = rng.random((2, 4, 4)) < 0.6
    mask[0, 2] = [False, False, False, True]  # allowed key is in the future: no key left for this query
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    check_against_reference(layer, x, {"m": mask}, partial(ref.attention, causal=True), mask=mask)


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (1, 1, 4, 4), (2, 1, 1, 4)])
def test_bias_side_input(shape):
    layer = fn.MultiHeadAttention(3, 2, num_kv_heads=1, bias="alibi")
    rng = np.random.default_rng(2)
    bias = rng.standard_normal(shape).astype(np.float32)
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    check_against_reference(layer, x, {"alibi": bias}, ref.attention, bias=bias.astype(np.float64))


def test_cross_attention_with_value_and_grouped_heads():
    layer = fn.MultiHeadAttention(4, 2, value_size=2, num_kv_heads=2, out_features=3, rotary=True)
    rng = np.random.default_rng(3)
    x = {"query": rng.standard_normal((2, 3, 5)), "key": rng.standard_normal((2, 6, 4)),
         "value": rng.standard_normal((2, 6, 2))}
    out_spec, params, _ = layer.init(jax.random.key(0), fn.spec_of({k: v.astype(np.float32) for k, v in x.items()}))
    assert out_spec == fn.spec((None, 3, 3))
    assert params["value"]["w"].shape == (2, 2, 2) and params["output"]["w"].shape == (4, 2, 3)
    params = to64(random_params(layer, fn.spec_of({k: v.astype(np.float32) for k, v in x.items()}))[0])
    with jax.enable_x64(True):
        y, _ = layer.apply(params, {}, {k: jnp.asarray(v) for k, v in x.items()})
    expected = ref.attention(params, {}, x["query"], key=x["key"], value=x["value"], rotary=True)
    np.testing.assert_allclose(y, expected, rtol=1e-9, atol=1e-9)
    # Without "value", the key input is the value input too.
    keys_only = {"query": x["query"], "key": x["key"]}
    layer2 = fn.MultiHeadAttention(2, 3)
    params2 = to64(random_params(layer2, fn.spec_of({k: v.astype(np.float32) for k, v in keys_only.items()}))[0])
    with jax.enable_x64(True):
        y2, _ = layer2.apply(params2, {}, {k: jnp.asarray(v) for k, v in keys_only.items()})
    np.testing.assert_allclose(y2, ref.attention(params2, {}, x["query"], key=x["key"]), rtol=1e-9, atol=1e-9)


def test_dropout_drops_attention_weights_with_the_layers_key():
    layer = fn.MultiHeadAttention(2, 3, dropout=0.5)
    x = np.random.default_rng(4).standard_normal((2, 4, 3)).astype(np.float32)
    params, state = random_params(layer, fn.spec_of(x))
    with pytest.raises(fn.MissingKeyError, match=r"dropout=0.5 and train=True needs a random key"):
        layer.apply(params, state, x, train=True)
    key = jax.random.key(7)
    y, _ = layer.apply(params, state, x, train=True, key=key)
    # The reference with the same dropout pattern on its weights (N, H, T, S): kept / (1 - rate).
    keep = np.asarray(jax.random.bernoulli(key, 0.5, (2, 2, 4, 4)))
    p = to64(params)
    q = np.einsum("ntc,chd->nthd", x, p["query"]["w"]) + p["query"]["b"]
    k = np.einsum("ntc,chd->nthd", x, p["key"]["w"]) + p["key"]["b"]
    v = np.einsum("ntc,chd->nthd", x, p["value"]["w"]) + p["value"]["b"]
    logits = np.einsum("nthd,nshd->nhts", q, k) / np.sqrt(3)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights = weights / weights.sum(-1, keepdims=True) * keep / 0.5
    expected = np.einsum("nthd,hdo->nto", np.einsum("nhts,nshd->nthd", weights, v), p["output"]["w"]) + p["output"]["b"]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    evaluated, _ = layer.apply(params, state, x)
    np.testing.assert_allclose(evaluated, ref.attention(p, {}, x.astype(np.float64)), rtol=1e-5, atol=1e-5)


def test_side_input_through_with_context():
    model = fn.with_context(fn.serial(fn.Dense(4, rank=3), fn.MultiHeadAttention(2, 2, mask="padding_mask")),
                            "padding_mask")
    spec = {"x": fn.spec((None, 4, 3)), "padding_mask": fn.spec((None, 4), bool)}
    _, params, state = model.init(jax.random.key(0), spec)
    x = np.random.default_rng(5).standard_normal((2, 4, 3)).astype(np.float32)
    y, _ = model.apply(params, state, {"x": x, "padding_mask": PADDING})
    hidden = to64(params["dense_0"])
    h = x @ hidden["w"] + hidden["b"]
    expected = ref.attention(to64(params["multiheadattention_0"]), {}, h, mask=PADDING)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# decode mode


def decoder(**options):
    return fn.MultiHeadAttention(4, 4, num_kv_heads=2, causal=True, rotary=True, **options)


def test_decoding_step_by_step_and_after_a_prefill_equals_the_causal_pass():
    layer = decoder()
    x = jax.random.normal(jax.random.key(1), (2, 6, 8))
    params, _ = random_params(layer, fn.spec((None, 6, 8)))
    whole, _ = jax.jit(lambda xx: layer.apply(params, {}, xx))(x)
    np.testing.assert_allclose(whole, ref.attention(to64(params), {}, np.asarray(x, np.float64), causal=True,
                                                    rotary=True), rtol=1e-5, atol=1e-5)
    decode = {"decode": jax.ShapeDtypeStruct((2, 8), jnp.int32)}  # a cache longer than the sequence
    _, _, cache = layer.init(jax.random.key(0), fn.spec((None, 1, 8)), context=decode)
    assert jax.tree.map(jnp.shape, cache) == {"cache": {"key": (2, 8, 2, 4), "value": (2, 8, 2, 4)}}
    step = jax.jit(lambda state, x_t, t: layer.apply(params, state, x_t, context={"decode": t}))
    state, outputs = cache, []
    for t in range(6):
        y_t, state = step(state, x[:, t:t + 1], t)
        outputs.append(y_t)
    np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), whole, rtol=1e-5, atol=1e-6)
    assert step._cache_size() == 1
    # Prefill 4 steps in one call, then two single steps.
    prefix, state = step(cache, x[:, :4], 0)
    rest = [step(state, x[:, 4:5], 4)]
    rest.append(step(rest[0][1], x[:, 5:6], 5))
    np.testing.assert_allclose(jnp.concatenate([prefix, rest[0][0], rest[1][0]], axis=1), whole, rtol=1e-5,
                               atol=1e-6)
    assert step._cache_size() == 2  # one compilation per input length


def test_decode_mode_reads_a_padding_mask_over_the_cache():
    layer = decoder(mask="m")
    x = jax.random.normal(jax.random.key(2), (2, 5, 8))
    mask = np.array([[False, True, True, True, True], [True, True, False, True, True]])
    params, _ = random_params(layer, fn.spec((None, 5, 8)), context={"m": fn.spec((None, 5), bool)})
    whole, _ = jax.jit(lambda xx, m: layer.apply(params, {}, xx, context={"m": m}))(x, mask)
    _, _, state = layer.init(jax.random.key(0), fn.spec((None, 1, 8)),
                             context={"decode": jax.ShapeDtypeStruct((2, 5), jnp.int32), "m": fn.spec((None, 5), bool)})
    step = jax.jit(lambda state, x_t, t: layer.apply(params, state, x_t, context={"decode": t, "m": mask}))
    outputs = []
    for t in range(5):
        y_t, state = step(state, x[:, t:t + 1], t)
        outputs.append(y_t)
    np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), whole, rtol=1e-5, atol=1e-6)


def test_decode_errors_name_the_fix():
    decode = {"decode": jax.ShapeDtypeStruct((2, 4), jnp.int32)}
    with pytest.raises(fn.LayerError, match=r"causal=False cannot decode.*\nHint: build it with causal=True"):
        fn.MultiHeadAttention(2, 2).init(jax.random.key(0), fn.spec((None, 1, 4)), context=decode)
    cross = {"query": fn.spec((None, 1, 4)), "key": fn.spec((None, 3, 4))}
    _, _, no_cache = fn.MultiHeadAttention(2, 2).init(jax.random.key(0), cross, context=decode)
    assert no_cache == {}  # cross-attention's keys are all there: it decodes without a cache
    layer = fn.MultiHeadAttention(2, 2, causal=True)
    _, params, state = layer.init(jax.random.key(0), fn.spec((None, 1, 4)), context=decode)
    with pytest.raises(fn.ShapeError, match=r"decoding 2 step\(s\) at position 3 needs positions 3 .. 4, but the "
                                            r"cache holds 4"):
        layer.apply(params, state, jnp.ones((2, 2, 4)), context={"decode": 3})
    with pytest.raises(fn.ParamsError, match=r"decode mode needs the cache state"):
        layer.apply(params, {}, jnp.ones((2, 1, 4)), context={"decode": 0})
    with pytest.raises(fn.ShapeError, match=r"the decode cache holds a batch of 2, got an input of batch 3"):
        layer.apply(params, state, jnp.ones((3, 1, 4)), context={"decode": 0})


# ----------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("kwargs, error, message", [
    ({"num_kv_heads": 3}, ValueError, r"`num_heads` \(4\) must be a multiple of `num_kv_heads` \(3\)"),
    ({"rotary": True, "key_size": 3}, ValueError, r"`key_size` must be even, got 3"),
    ({"dropout": 1.0}, ValueError, r"`dropout` is the probability .* in \[0, 1\), got 1.0"),
    ({"causal": 1}, TypeError, r"`causal` must be True or False, got 1"),
    ({"mask": ""}, TypeError, r"`mask` names a side input"),
])
def test_bad_arguments(kwargs, error, message):
    options = {"num_heads": 4, "key_size": 2, **kwargs}
    with pytest.raises(error, match=message):
        fn.MultiHeadAttention(**options)


def test_bad_inputs_at_init():
    layer = fn.MultiHeadAttention(2, 2)
    with pytest.raises(fn.ShapeError, match=r"takes one array or a dict .*\nHint: give one array \(N, T, C\)"):
        layer.init(jax.random.key(0), (fn.spec((None, 3, 4)), fn.spec((None, 3, 4))))
    with pytest.raises(fn.ShapeError, match=r"takes a dict with keys 'query', 'key' and optionally 'value', got keys "
                                            r"\['k', 'query'\]"):
        layer.init(jax.random.key(0), {"query": fn.spec((None, 3, 4)), "k": fn.spec((None, 3, 4))})
    with pytest.raises(fn.ShapeError, match=r"expected input of rank 3 \(batch, time, features\) as x, got shape "
                                            r"\(N, 12\)"):
        layer.init(jax.random.key(0), (None, 12))
    with pytest.raises(fn.ShapeError, match=r"key and value must have the same number of steps"):
        layer.init(jax.random.key(0), {"query": (None, 3, 4), "key": (None, 5, 4), "value": (None, 6, 4)})


def test_bad_side_inputs_at_init():
    x = fn.spec((None, 3, 4))
    with pytest.raises(fn.MissingInputError, match=r"reads the side input 'pad', but the context holds none"):
        fn.MultiHeadAttention(2, 2, mask="pad").init(jax.random.key(0), x)
    with pytest.raises(fn.InputTypeError, match=r"expected the side input 'pad' \(MultiHeadAttention's mask\) of a "
                                                r"bool dtype, got float32"):
        fn.MultiHeadAttention(2, 2, mask="pad").init(jax.random.key(0), x, context={"pad": fn.spec((None, 3))})
    with pytest.raises(fn.ShapeError, match=r"the side input 'pad' \(its mask\) must have shape \(N, 3\) for the keys "
                                            r"or \(N, 3, 3\) for each query and key, got \(N, 4\)"):
        fn.MultiHeadAttention(2, 2, mask="pad").init(jax.random.key(0), x, context={"pad": fn.spec((None, 4), bool)})
    with pytest.raises(fn.ShapeError, match=r"the side input 'b' \(its bias\) must have 4 axes broadcastable to "
                                            r"\(N, 2, 3, 3\), .* got \(N, 3, 3, 3\)"):
        fn.MultiHeadAttention(2, 2, bias="b").init(jax.random.key(0), x, context={"b": fn.spec((None, 3, 3, 3))})


def test_a_model_of_the_new_layers_round_trips_through_a_checkpoint_without_its_code(tmp_path):
    from funcnet import architecture as arch
    from funcnet import checkpoint as ck

    model = fn.with_context(fn.serial(
        fn.Dense(8, rank=3), fn.PositionalEmbedding(6), fn.SinusoidalEncoding(base=50.0), fn.RMSNorm(epsilon=1e-5),
        fn.MultiHeadAttention(4, 2, num_kv_heads=2, causal=True, rotary=True, mask="padding_mask", value_size=3,
                              out_features=5, dropout=0.1, use_bias=False, rotary_base=500.0),
    ), "padding_mask")
    spec = {"x": fn.spec((None, 4, 3)), "padding_mask": fn.spec((None, 4), bool)}
    params, state = random_params(model, spec)
    ck.save(tmp_path / "c", {"params": params, "state": state}, model=model, input_shape=spec)
    restored = ck.restore(tmp_path / "c")
    assert arch.describe(restored.model) == arch.describe(model) and restored.model is not model
    batch = {"x": np.random.default_rng(6).standard_normal((2, 4, 3)).astype(np.float32), "padding_mask": PADDING}
    for train in (False, True):
        want, _ = jax.jit(model.apply, static_argnames="train")(params, state, batch, train=train,
                                                                key=jax.random.key(1))
        got, _ = jax.jit(restored.model.apply, static_argnames="train")(
            restored.tree["params"], restored.tree["state"], batch, train=train, key=jax.random.key(1))
        np.testing.assert_array_equal(got, want)


def test_params_of_another_configuration_are_a_params_error():
    _, params, _ = fn.MultiHeadAttention(2, 2).init(jax.random.key(0), (None, 3, 4))
    with pytest.raises(fn.ParamsError, match=r"params\['query'\] have shapes \[\(4, 2, 2\), \(2, 2\)\] for "
                                             r"\['w', 'b'\], but this layer's query heads are \(4, 2\)"):
        fn.MultiHeadAttention(4, 2).apply(params, {}, jnp.ones((2, 3, 4)))
    with pytest.raises(fn.ShapeError, match=r"was built for inputs of shape \(N, N, 4\) \(params\['query'\]\['w'\] has "
                                            r"shape \(4, 2, 2\)\), got \(2, 3, 5\)"):
        fn.MultiHeadAttention(2, 2).apply(params, {}, jnp.ones((2, 3, 5)))
