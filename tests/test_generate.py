"""fn.generate: greedy and sampled tokens against re-running the whole model on the growing sequence,
one compilation per (prompt length, steps), each new token one step over the cache, and its errors.

The model here decodes through a small layer of the test's own (a causal running mean with a
cache), so these tests do not depend on MultiHeadAttention; test_transformer.py runs generate on
a real attention language model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from funcnet.core import Layer, array_spec, side_input

VOCAB, WIDTH = 11, 8


def CausalMean(calls=None, name=None):
    """``(N, T, C) -> (N, T, C)``: the mean of the steps up to each one; in decode mode, steps
    ``t .. t+L-1`` from a cache ``(batch, max_length, C)``. ``calls`` records each traced input shape."""

    def init(key, input_spec, *, context=None):
        x = array_spec(input_spec, dtype=jnp.floating)
        if context is None or "decode" not in context:
            return x, {}, {}
        return x, {}, {"cache": jnp.zeros((*context["decode"].shape, x.shape[-1]), x.dtype)}

    def apply(params, state, x, *, key=None, train=False, context=None):
        if calls is not None:
            calls.append(tuple(x.shape))
        if context is None or "decode" not in context:
            return jnp.cumsum(x, axis=1) / jnp.arange(1, x.shape[1] + 1, dtype=x.dtype)[:, None], state
        start = side_input(context, "decode", "CausalMean")
        cache = jax.lax.dynamic_update_slice_in_dim(state["cache"], x, start, axis=1)
        sums = jax.lax.dynamic_slice_in_dim(jnp.cumsum(cache, axis=1), start, x.shape[1], axis=1)
        counts = (start + 1 + jnp.arange(x.shape[1])).astype(x.dtype)[:, None]
        return sums / counts, {"cache": cache}

    return Layer(init, apply, "CausalMean", {}, (), name)


def language_model(calls=None):
    return fn.serial(fn.Embedding(VOCAB, WIDTH), fn.Dense(WIDTH, rank=3, activation="tanh"), CausalMean(calls),
                     fn.Dense(VOCAB, rank=3))


@pytest.fixture
def trained():
    model = language_model()
    _, params, state = model.init(jax.random.key(0), fn.spec((None, 4), "int32"))
    # Larger weights than init's, so the logits differ clearly and argmax has no near-ties.
    params = jax.tree.map(lambda a: a * 4, params)
    prompt = jax.random.randint(jax.random.key(1), (3, 4), 0, VOCAB, dtype=jnp.int32)
    return model, params, state, prompt


def rerun_reference(model, params, state, prompt, steps, choose):
    """The honest reference: the whole model on the whole sequence so far, for every new token."""
    tokens = np.asarray(prompt)
    for i in range(steps):
        logits, _ = model.apply(params, state, jnp.asarray(tokens))
        tokens = np.concatenate([tokens, np.asarray(choose(logits[:, -1], i))[:, None]], axis=1)
    return tokens


def test_greedy_generate_equals_argmax_of_rerunning_the_model(trained):
    model, params, state, prompt = trained
    out = fn.generate(model, params, state, prompt, 9, jax.random.key(2), temperature=0)
    expected = rerun_reference(model, params, state, prompt, 9, lambda logits, i: jnp.argmax(logits, -1))
    assert out.dtype == jnp.int32 and out.shape == (3, 13)
    np.testing.assert_array_equal(out, expected)


def test_sampled_tokens_are_categorical_draws_with_one_key_per_token(trained):
    model, params, state, prompt = trained
    key, steps = jax.random.key(3), 7
    keys = jax.random.split(key, steps)
    for temperature, top_k in ((1.0, None), (0.7, 3)):
        def choose(logits, i, temperature=temperature, top_k=top_k):
            if top_k is not None:
                kth = np.sort(np.asarray(logits), axis=-1)[:, -top_k][:, None]
                logits = jnp.where(logits < kth, -jnp.inf, logits)
            return jax.random.categorical(keys[i], logits / temperature, axis=-1)

        out = fn.generate(model, params, state, prompt, steps, key, temperature=temperature, top_k=top_k)
        np.testing.assert_array_equal(out, rerun_reference(model, params, state, prompt, steps, choose))


def test_top_k_one_is_greedy_and_sampling_varies_with_the_key(trained):
    model, params, state, prompt = trained
    greedy = fn.generate(model, params, state, prompt, 6, None, temperature=0)
    np.testing.assert_array_equal(fn.generate(model, params, state, prompt, 6, jax.random.key(5), top_k=1), greedy)
    draws = {tuple(np.asarray(fn.generate(model, params, state, prompt, 6,
                                          jax.random.key(seed), temperature=3.0)).ravel()) for seed in range(4)}
    assert len(draws) > 1


def test_one_compilation_per_prompt_length_and_steps_none_per_token():
    calls = []
    model = language_model(calls)
    _, params, state = model.init(jax.random.key(0), fn.spec((None, 5), "int32"))
    prompt = jnp.zeros((2, 5), jnp.int32)
    fn.generate(model, params, state, prompt, 12, jax.random.key(0))
    # Traced twice in all: the prefill over the 5 prompt tokens, then the scan's one-token step.
    assert calls == [(2, 5, WIDTH), (2, 1, WIDTH)]
    fn.generate(model, params, state, prompt + 1, 12, jax.random.key(1))
    fn.generate(model, jax.tree.map(lambda a: a + 1, params), state, prompt, 12, jax.random.key(2))
    assert len(calls) == 2, "same shapes, other prompt / params / key: no new compilation"
    fn.generate(model, params, state, prompt, 3, jax.random.key(0))
    fn.generate(model, params, state, prompt[:, :2], 12, jax.random.key(0))
    assert calls[2:] == [(2, 5, WIDTH), (2, 1, WIDTH), (2, 2, WIDTH), (2, 1, WIDTH)]


def test_trained_state_entries_are_kept():
    model = fn.serial(fn.Embedding(VOCAB, WIDTH), fn.BatchNorm(), CausalMean(), fn.Dense(VOCAB, rank=3))
    _, params, state = model.init(jax.random.key(0), fn.spec((None, 4), "int32"))
    state = jax.tree.map(lambda a: a + 0.5, state)  # "trained" running statistics
    prompt = jnp.arange(8, dtype=jnp.int32).reshape(2, 4)
    out = fn.generate(model, params, state, prompt, 5, None, temperature=0)
    expected = rerun_reference(model, params, state, prompt, 5, lambda logits, i: jnp.argmax(logits, -1))
    np.testing.assert_array_equal(out, expected)


def test_zero_steps_returns_the_prompt(trained):
    model, params, state, prompt = trained
    np.testing.assert_array_equal(fn.generate(model, params, state, prompt, 0, None), prompt)


def test_a_model_without_a_decoding_layer_is_refused():
    model = fn.serial(fn.Embedding(VOCAB, WIDTH), fn.Dense(VOCAB, rank=3))
    _, params, state = model.init(jax.random.key(0), fn.spec((None, 4), "int32"))
    with pytest.raises(ValueError, match=r"the model keeps no cache in decode mode .*MultiHeadAttention"):
        fn.generate(model, params, state, jnp.zeros((1, 4), jnp.int32), 3, None, temperature=0)


@pytest.mark.parametrize(("prompt", "steps", "options", "message"), [
    (np.zeros((2, 3), np.float32), 2, {}, (r"`prompt` must be int token ids of shape \(batch, prompt_length\), "
                                          r"got float32 of shape \(2, 3\)")),
    (np.zeros((3,), np.int32), 2, {}, r"got int32 of shape \(3,\); for one sequence use prompt\[None\]"),
    (np.zeros((2, 0), np.int32), 2, {}, "at least one token"),
    (np.zeros((2, 3), np.int32), -1, {}, r"`steps` must be a non-negative int .*got -1"),
    (np.zeros((2, 3), np.int32), 2, {"temperature": -1.0}, r"`temperature` must be a number >= 0"),
    (np.zeros((2, 3), np.int32), 2, {"top_k": 0}, r"`top_k` must be a positive int or None, got 0"),
    (np.zeros((2, 3), np.int32), 2, {"top_k": VOCAB + 1}, (rf"`top_k` \({VOCAB + 1}\) exceeds the vocabulary size "
                                                          rf"\({VOCAB}\)")),
])
def test_argument_errors(trained, prompt, steps, options, message):
    model, params, state, _ = trained
    with pytest.raises(ValueError, match=message):
        fn.generate(model, params, state, prompt, steps, jax.random.key(0), **options)


def test_sampling_without_a_key_is_refused(trained):
    model, params, state, prompt = trained
    with pytest.raises(ValueError, match="needs a `key`"):
        fn.generate(model, params, state, prompt, 2, None)
