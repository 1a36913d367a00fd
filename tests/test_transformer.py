"""Transformer blocks against the float64 NumPy reference of the pre-norm block (masks, memory,
gradients), decode mode through a block, the architecture round trip, errors, and fn.generate on
a real attention language model.

The registry (tests/cases_transformer.py) already runs the plain blocks through the common checks
(shape agreement, forward and gradients against the reference, jit/vmap, dtypes, save/load).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from funcnet import architecture as arch
from funcnet.core import Layer
from tests import references_transformer as ref


def random_params(layer, input_spec, seed=0, scale=0.5):
    _, params, state = layer.init(jax.random.key(seed), input_spec)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: np.asarray(rng.standard_normal(a.shape) * scale), params), state


def test_encoder_params_are_named_like_the_combinators():
    block = fn.TransformerEncoderBlock(2, 16)
    _, params, state = block.init(jax.random.key(0), (None, 5, 8))
    shapes = jax.tree.map(jnp.shape, params)
    assert shapes["self_attention"]["attention"]["query"]["w"] == (8, 2, 4)  # key_size = C // num_heads
    assert shapes["mlp"] == {"norm": {"scale": (8,), "bias": (8,)}, "hidden": {"w": (8, 16), "b": (16,)},
                             "output": {"w": (16, 8), "b": (8,)}}
    assert sorted(params) == ["mlp", "self_attention"] and state == {}
    # The block's layers are an ordinary serial: the same params apply to it.
    layers = fn.layers.transformer.encoder_layers(8, num_heads=2, mlp_dim=16)
    x = jax.random.normal(jax.random.key(1), (2, 5, 8))
    np.testing.assert_array_equal(block.apply(params, state, x)[0], layers.apply(params, state, x)[0])


def test_encoder_with_a_padding_mask_side_input_matches_the_reference():
    block = fn.TransformerEncoderBlock(2, 12, mask="padding_mask", norm="layer")
    model = fn.with_context(block, "padding_mask")
    input_spec = {"x": fn.spec((None, 5, 8)), "padding_mask": fn.spec((None, 5), bool)}
    params, state = random_params(model, input_spec)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 8))
    mask = np.arange(5)[None, :] < np.array([[5], [3], [1]])
    with jax.enable_x64(True):
        y, _ = model.apply(params, state, {"x": jnp.asarray(x), "padding_mask": jnp.asarray(mask)})
    np.testing.assert_allclose(np.asarray(y), ref.encoder_block(params, x, mask=mask), rtol=1e-9, atol=1e-9)


def decoder_with_memory():
    block = fn.with_context(fn.TransformerDecoderBlock(2, 8, key_size=3, memory="memory"), "memory")
    input_spec = {"x": fn.spec((None, 4, 6)), "memory": fn.spec((None, 3, 5))}
    params, state = random_params(block, input_spec)
    rng = np.random.default_rng(2)
    return block, params, state, rng.standard_normal((2, 4, 6)), rng.standard_normal((2, 3, 5))


def test_decoder_with_memory_matches_the_reference():
    block, params, state, x, memory = decoder_with_memory()
    assert jax.tree.map(jnp.shape, params)["cross_attention"]["attention"]["key"]["w"] == (5, 2, 3)
    with jax.enable_x64(True):
        y, _ = block.apply(params, state, {"x": jnp.asarray(x), "memory": jnp.asarray(memory)})
    np.testing.assert_allclose(np.asarray(y), ref.decoder_block(params, x, memory), rtol=1e-9, atol=1e-9)
    # Without memory the block is causal: a change at the last step leaves the earlier ones alone.
    plain = fn.TransformerDecoderBlock(2, 8, key_size=3)
    plain_params = {k: v for k, v in params.items() if k != "cross_attention"}
    with jax.enable_x64(True):
        first, _ = plain.apply(plain_params, {}, jnp.asarray(x))
        moved = x.copy()
        moved[:, -1] += 1.0
        second, _ = plain.apply(plain_params, {}, jnp.asarray(moved))
    np.testing.assert_allclose(np.asarray(first), ref.decoder_block(plain_params, x), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(first)[:, :-1], np.asarray(second)[:, :-1])


def test_decoder_blocks_with_memory_stack_in_serial():
    stack = fn.with_context(fn.serial(*(fn.TransformerDecoderBlock(2, 8, key_size=3, memory="memory")
                                        for _ in range(2))), "memory")
    params, state = random_params(stack, {"x": fn.spec((None, 4, 6)), "memory": fn.spec((None, 3, 5))})
    rng = np.random.default_rng(5)
    x, memory = rng.standard_normal((2, 4, 6)), rng.standard_normal((2, 3, 5))
    with jax.enable_x64(True):
        y, _ = stack.apply(params, state, {"x": jnp.asarray(x), "memory": jnp.asarray(memory)})
    first = ref.decoder_block(params["transformerdecoderblock_0"], x, memory)
    expected = ref.decoder_block(params["transformerdecoderblock_1"], first, memory)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-9, atol=1e-9)


def test_decoder_with_memory_gradients_match_central_differences_of_the_reference():
    block, params, state, x, memory = decoder_with_memory()
    probe = np.random.default_rng(3).standard_normal((2, 4, 6))
    with jax.enable_x64(True):
        def loss(p, xx, mm):
            return jnp.sum(block.apply(p, state, {"x": xx, "memory": mm})[0] * probe)
        grads = jax.grad(loss, argnums=(0, 1, 2))(params, jnp.asarray(x), jnp.asarray(memory))

    def reference_loss(tree):
        return float(np.sum(ref.decoder_block(tree["params"], tree["x"], tree["memory"]) * probe))

    tree = {"params": params, "x": x, "memory": memory}
    got = {"params": grads[0], "x": grads[1], "memory": grads[2]}
    rng = np.random.default_rng(4)
    leaves, treedef = jax.tree.flatten(tree)
    for index, (leaf, grad) in enumerate(zip(leaves, jax.tree.leaves(got), strict=True)):
        for c in rng.choice(leaf.size, size=min(4, leaf.size), replace=False):
            def shifted(delta, index=index, c=c):
                moved = [np.array(a, copy=True) for a in leaves]
                moved[index].reshape(-1)[c] += delta
                return reference_loss(jax.tree.unflatten(treedef, moved))
            numeric = (shifted(1e-6) - shifted(-1e-6)) / 2e-6
            np.testing.assert_allclose(np.asarray(grad).reshape(-1)[c], numeric, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block", [fn.TransformerDecoderBlock(2, 8, rotary=True, norm="layer"),
                                   fn.TransformerEncoderBlock(2, 8, causal=True)], ids=["decoder_rotary",
                                                                                         "causal_encoder"])
def test_decode_mode_through_a_block_equals_the_whole_sequence(block):
    model = fn.serial(block, fn.TransformerDecoderBlock(2, 8))
    _, params, _ = model.init(jax.random.key(0), (None, 6, 8))
    x = jax.random.normal(jax.random.key(1), (2, 6, 8))
    whole, _ = model.apply(params, {}, x)
    _, _, cache = model.init(jax.random.key(0), (None, 6, 8), context={"decode": jax.ShapeDtypeStruct((2, 6),
                                                                                                       jnp.int32)})
    assert jax.tree.map(jnp.shape, cache)["transformerdecoderblock_0"]["self_attention"]["attention"]["cache"] == {
        "key": (2, 6, 2, 4), "value": (2, 6, 2, 4)}
    step = jax.jit(lambda cache, x_t, t: model.apply(params, cache, x_t, context={"decode": t}))
    outputs = []
    first, cache = step(cache, x[:, :3], 0)  # a 3-step prefill, then one step per call
    outputs.append(first)
    for t in range(3, 6):
        y_t, cache = step(cache, x[:, t:t + 1], t)
        outputs.append(y_t)
    np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), whole, rtol=1e-5, atol=1e-5)
    assert step._cache_size() == 2  # one compilation per input length


def test_decode_mode_with_a_memory_equals_the_whole_sequence():
    block = fn.TransformerDecoderBlock(2, 8, rotary=True, memory="memory")
    memory = jax.random.normal(jax.random.key(2), (2, 3, 8))
    _, params, _ = block.init(jax.random.key(0), (None, 5, 8), context={"memory": fn.spec_of(memory)})
    x = jax.random.normal(jax.random.key(1), (2, 5, 8))
    whole, _ = block.apply(params, {}, x, context={"memory": memory})
    _, _, cache = block.init(jax.random.key(0), (None, 5, 8), context={
        "memory": fn.spec_of(memory), "decode": jax.ShapeDtypeStruct((2, 5), jnp.int32)})
    outputs = []
    for t in range(5):
        y_t, cache = block.apply(params, cache, x[:, t:t + 1], context={"memory": memory, "decode": t})
        outputs.append(y_t)
    np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), whole, rtol=1e-5, atol=1e-5)


def test_blocks_round_trip_through_the_architecture_json():
    model = fn.with_context(fn.serial(fn.Dense(6, rank=3), fn.TransformerDecoderBlock(
        3, 10, dropout=0.1, norm="layer", activation="relu", memory="memory", name="decoder")), "memory")
    input_spec = {"x": fn.spec((None, 4, 5)), "memory": fn.spec((None, 2, 7))}
    rebuilt = arch.from_json(arch.to_json(model, input_spec))
    _, params, state = model.init(jax.random.key(0), input_spec)
    batch = {"x": jnp.ones((2, 4, 5)), "memory": jnp.ones((2, 2, 7))}
    np.testing.assert_array_equal(rebuilt.apply(params, state, batch)[0], model.apply(params, state, batch)[0])
    assert arch.describe(rebuilt) == arch.describe(model)


def test_dropout_drops_in_training_only():
    block = fn.TransformerEncoderBlock(2, 8, dropout=0.5)
    _, params, state = block.init(jax.random.key(0), (None, 4, 8))
    x = jax.random.normal(jax.random.key(1), (2, 4, 8))
    a, _ = block.apply(params, state, x, key=jax.random.key(2), train=True)
    b, _ = block.apply(params, state, x, key=jax.random.key(3), train=True)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(block.apply(params, state, x)[0], block.apply(params, state, x, train=False)[0])
    with pytest.raises(fn.MissingKeyError, match="needs a random key"):
        block.apply(params, state, x, train=True)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: fn.TransformerEncoderBlock(2, 8, norm="batch"), r"`norm` must be one of \['layer', 'rms'\], got 'batch'"),
    (lambda: fn.TransformerEncoderBlock(2, 8, activation=jax.nn.relu), r"`activation` must be a name"),
    (lambda: fn.TransformerDecoderBlock(2, 8, activation="swish"), r"unknown activation 'swish'"),
    (lambda: fn.TransformerEncoderBlock(0, 8), r"`num_heads` must be a positive integer, got 0"),
    (lambda: fn.TransformerDecoderBlock(2, 8, dropout=1.0), r"`dropout` is the probability of dropping"),
])
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_input_errors():
    with pytest.raises(fn.ShapeError, match=r"the input's 6 features do not split into num_heads=4 heads"):
        fn.TransformerEncoderBlock(4, 8).init(jax.random.key(0), (None, 3, 6))
    with pytest.raises(fn.ShapeError, match=r"expects a sequence \(batch, time, features\), got \(N, 6\)"):
        fn.TransformerEncoderBlock(2, 8).init(jax.random.key(0), (None, 6))
    decoder = fn.TransformerDecoderBlock(2, 8, memory="memory")
    with pytest.raises(fn.MissingInputError, match=r"reads the side input 'memory', but the context holds none"):
        decoder.init(jax.random.key(0), (None, 3, 6))
    _, params, _ = fn.TransformerDecoderBlock(2, 8).init(jax.random.key(0), (None, 3, 6))
    with pytest.raises(fn.ParamsError, match=r"cross_attention"):
        decoder.apply(params, {}, jnp.ones((1, 3, 6)), context={"memory": jnp.ones((1, 2, 6))})


# ---------------------------------------------------------------------------------------------
# generate on a real attention language model

VOCAB = 13


def Recording(model, calls):
    """``model`` as it is, recording the shape of every input its apply is traced or run with."""

    def apply(params, state, x, **options):
        calls.append(tuple(x.shape))
        return model.apply(params, state, x, **options)

    return Layer(model.init, apply, "Recording", {}, (model,))


def attention_language_model():
    return fn.serial(fn.Embedding(VOCAB, 16), fn.PositionalEmbedding(32), fn.TransformerDecoderBlock(2, 32),
                     fn.TransformerDecoderBlock(2, 32, rotary=True), fn.LayerNorm(), fn.Dense(VOCAB, rank=3))


def test_greedy_generate_with_attention_equals_rerunning_the_model_and_steps_over_the_cache():
    calls = []
    model = Recording(attention_language_model(), calls)
    _, params, state = model.init(jax.random.key(0), fn.spec((None, 5), "int32"))
    params = jax.tree.map(lambda a: a * 3, params)  # clear argmax margins
    prompt = jax.random.randint(jax.random.key(1), (2, 5), 0, VOCAB, dtype=jnp.int32)
    out = fn.generate(model, params, state, prompt, 8, None, temperature=0)
    # Traced once on the 5-token prompt and once on one token: each new token is a step over the cache.
    assert calls[-2:] == [(2, 5), (2, 1)]
    tokens, rerun = np.asarray(prompt), jax.jit(model.apply)
    for _ in range(8):
        logits, _ = rerun(params, state, jnp.asarray(tokens))
        tokens = np.concatenate([tokens, np.asarray(jnp.argmax(logits[:, -1], -1))[:, None]], axis=1)
    np.testing.assert_array_equal(out, tokens)
    assert len(set(tokens[:, 5:].ravel().tolist())) > 1  # not a constant continuation
