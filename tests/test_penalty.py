"""Penalties: a layer's term in the training loss, composed by every combinator."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from funcnet.core import Layer


def L2Scaled(units: int, strength: float, name=None) -> Layer:
    """Dense(units) without bias whose penalty is ``strength * sum(w**2)``."""
    dense = fn.Dense(units, use_bias=False)

    def penalty(params):
        return strength * jnp.sum(params["w"] ** 2)

    return dense._replace(kind="L2Scaled", name=name, penalty=penalty)


def reference(params_w: list[np.ndarray], strengths: list[float]) -> float:
    return float(sum(s * np.sum(np.asarray(w, np.float64) ** 2) for w, s in zip(params_w, strengths, strict=True)))


def test_a_model_without_penalties_adds_zero_and_traces_nothing():
    model = fn.serial(fn.Dense(3), fn.Relu(), fn.Dense(2))
    _, params, _ = model.init(jax.random.key(0), (None, 4))
    assert model.penalty is None
    assert fn.penalty(model, params) == 0.0


def test_every_combinator_sums_its_childrens_penalties_on_their_own_params():
    inner = fn.residual(L2Scaled(4, 0.5), fn.Relu(), shortcut=L2Scaled(4, 2.0))
    body = fn.serial(
        fn.parallel({"image": fn.serial(fn.Flatten(), L2Scaled(4, 0.25)), "meta": L2Scaled(4, 1.0)}),
        fn.FanInConcat(), L2Scaled(4, 3.0), inner,
        fn.branch(L2Scaled(2, 0.125), fn.Dense(2)), fn.FanInSum(),
    )
    model = fn.with_context(body, "unused")
    spec = {"image": fn.spec((None, 2, 3)), "meta": fn.spec((None, 5)), "unused": fn.spec((None, 1))}
    _, params, _ = model.init(jax.random.key(0), spec)
    p = params
    ws = [p["parallel_0"]["image"]["l2scaled_0"]["w"], p["parallel_0"]["meta"]["w"], p["l2scaled_0"]["w"],
          p["residual_0"]["l2scaled_0"]["w"], p["residual_0"]["shortcut"]["w"], p["branch_0"]["l2scaled_0"]["w"]]
    expected = reference(ws, [0.25, 1.0, 3.0, 0.5, 2.0, 0.125])
    np.testing.assert_allclose(float(fn.penalty(model, params)), expected, rtol=1e-6)
    np.testing.assert_allclose(float(jax.jit(lambda q: fn.penalty(model, q))(params)), expected, rtol=1e-6)
    grads = jax.grad(lambda q: fn.penalty(model, q))(params)
    np.testing.assert_allclose(grads["l2scaled_0"]["w"], 2 * 3.0 * np.asarray(ws[2]), rtol=1e-6)
    np.testing.assert_array_equal(grads["branch_0"]["dense_0"]["w"], 0.0)  # no penalty, no gradient


def test_a_tied_weight_is_penalised_once_per_use():
    model = fn.tied(fn.serial(L2Scaled(3, 1.0), L2Scaled(3, 10.0)), {"l2scaled_1/w": ("l2scaled_0/w", "transpose")})
    _, params, _ = model.init(jax.random.key(0), (None, 3))
    w = np.asarray(params["l2scaled_0"]["w"], np.float64)
    assert list(params) == ["l2scaled_0"]
    np.testing.assert_allclose(float(fn.penalty(model, params)), 11.0 * np.sum(w**2), rtol=1e-6)


@pytest.mark.parametrize("strength", [0.0, 0.5])
def test_the_train_step_adds_the_penalty_to_the_loss(strength):
    model = fn.serial(L2Scaled(3, strength), fn.Dense(2))
    _, params, state = model.init(jax.random.key(0), (None, 4))
    x = jax.random.normal(jax.random.key(1), (8, 4))
    y = jnp.arange(8) % 2
    step = fn.make_train_step(model, "sparse_categorical_crossentropy", "sgd", learning_rate=0.1)
    opt_state = fn.training.init_opt_state(params, "sgd", learning_rate=0.1)

    def objective(p):
        logits, _ = model.apply(p, state, x, train=True)
        data = fn.losses.sparse_categorical_crossentropy(y, logits).mean()
        return data + strength * jnp.sum(p["l2scaled_0"]["w"] ** 2)

    expected_loss = objective(params)
    expected = jax.tree_util.tree_map(lambda w, g: w - 0.1 * g, params, jax.grad(objective)(params))
    new_params, _, _, logs = step(jax.tree_util.tree_map(jnp.copy, params), state, opt_state, (x, y),
                                  jax.random.key(2))
    np.testing.assert_allclose(float(logs["loss"]), float(expected_loss), rtol=1e-5)
    for got, want in zip(jax.tree_util.tree_leaves(new_params), jax.tree_util.tree_leaves(expected), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_evaluate_reports_the_loss_with_the_penalty_as_training_does():
    model = fn.serial(L2Scaled(3, 0.5), fn.Dense(2))
    _, params, state = model.init(jax.random.key(0), (None, 4))
    x = np.asarray(jax.random.normal(jax.random.key(1), (10, 4)))
    y = np.arange(10) % 2
    logits, _ = model.apply(params, state, jnp.asarray(x))
    data = float(fn.losses.sparse_categorical_crossentropy(jnp.asarray(y), logits).mean())
    expected = data + 0.5 * float(np.sum(np.asarray(params["l2scaled_0"]["w"], np.float64) ** 2))
    logs = fn.evaluate(model, params, state, x, y, loss="sparse_categorical_crossentropy", batch_size=4)
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)
