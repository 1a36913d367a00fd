"""Whole-model helpers: predict_fn, count_params, summary; and one compilation per jitted step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import funcnet as fn


def test_predict_fn_is_the_model_in_evaluation_mode(key):
    model = fn.serial(fn.Dense(4), fn.Dropout(0.5), fn.Dense(2))
    _, params, state = model.init(key, (None, 3))
    x = jnp.ones((5, 3))
    predict = fn.predict_fn(model)
    np.testing.assert_array_equal(predict(params, x), model.apply(params, state, x)[0])
    np.testing.assert_array_equal(fn.predict_fn(model, jit=False)(params, x), predict(params, x))


def test_count_params_and_summary_agree_with_init(key):
    model = fn.serial(fn.Flatten(), fn.named("block", fn.serial(fn.Dense(8), fn.Relu())), fn.Dense(3))
    _, params, _ = model.init(key, (None, 2, 2))
    assert fn.count_params(params) == (4 * 8 + 8) + (8 * 3 + 3)
    text = fn.summary(model, (None, 2, 2))
    lines = text.splitlines()
    assert lines[0].split() == ["Layer", "Kind", "Output", "Params"]
    rows = {line.split()[0]: line for line in lines[2:6]}
    assert list(rows) == ["flatten_0", "block/dense_0", "block/relu_0", "dense_0"]
    assert "(N, 8) float32" in rows["block/dense_0"] and rows["block/dense_0"].rstrip().endswith("40")
    assert rows["dense_0"].rstrip().endswith("27")
    assert "Parameters: 67" in text and "Input: (N, 2, 2) float32" in text


def test_a_jitted_train_step_compiles_once(key):
    model = fn.serial(fn.Dense(8, activation="relu"), fn.Dense(2))
    _, params, state = model.init(key, (None, 3))
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss(p):
            return jnp.mean((model.apply(p, state, x, train=True)[0] - y) ** 2)
        grads = jax.grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for i in range(3):
        x = jax.random.normal(jax.random.fold_in(key, i), (4, 3))
        params, opt_state = step(params, opt_state, x, jnp.zeros((4, 2)))
    assert step._cache_size() == 1
