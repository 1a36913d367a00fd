"""A model exported with ``jax.export`` for the CPU, serialised, deserialised and run.

Layers choose their lowering for the platform the export lowers for (``"auto"``; see
:mod:`funcnet.layers._lowering`), so an artifact made for the CPU holds the fast lowering and one
made for several platforms holds each platform's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn


def _model_params_input(batch=3):
    model = fn.Sequential([fn.Conv2D(4, 3, activation="relu"), fn.MaxPool2D(2), fn.Flatten(),
                           fn.Dense(5)])
    _, params, state = model.init(jax.random.key(0), (None, 10, 10, 2))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, 10, 10, 2)), jnp.float32)
    return model, params, state, x


def _round_trip(exported: jax.export.Exported) -> jax.export.Exported:
    blob = exported.serialize()
    assert isinstance(blob, bytearray) and len(blob) > 0
    return jax.export.deserialize(blob)


def test_exported_for_the_cpu_runs_and_matches_apply():
    model, params, state, x = _model_params_input()

    def predict(p, s, xx):
        return model.apply(p, s, xx)[0]

    exported = jax.export.export(jax.jit(predict), platforms=["cpu"])(params, state, x)
    restored = _round_trip(exported)
    assert restored.platforms == ("cpu",)
    got = restored.call(params, state, x)
    assert got.shape == (3, 5)
    np.testing.assert_array_equal(got, jax.jit(predict)(params, state, x))
    np.testing.assert_allclose(got, model.apply(params, state, x)[0], rtol=1e-6, atol=1e-6)


def test_exported_with_a_symbolic_batch_runs_on_other_batch_sizes():
    model, params, state, x = _model_params_input(batch=6)

    def predict(p, s, xx):
        return model.apply(p, s, xx)[0]

    batch, = jax.export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((batch, 10, 10, 2), jnp.float32)
    restored = _round_trip(jax.export.export(jax.jit(predict), platforms=["cpu"])(params, state, spec))
    for n in (1, 6):
        np.testing.assert_allclose(restored.call(params, state, x[:n]), model.apply(params, state, x[:n])[0],
                                   rtol=1e-6, atol=1e-6)


def test_exported_training_gradient_matches():
    model, params, state, x = _model_params_input()

    def loss(p, xx):
        return jnp.sum(model.apply(p, state, xx)[0] ** 2)

    grad = jax.jit(jax.grad(loss))
    restored = _round_trip(jax.export.export(grad, platforms=["cpu"])(params, x))
    for got, expected in zip(jax.tree.leaves(restored.call(params, x)), jax.tree.leaves(grad(params, x)),
                             strict=True):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="runs the artifact on the CPU")
def test_exported_for_cpu_and_cuda_runs_the_fast_lowering_on_the_cpu():
    model, params, state, x = _model_params_input()

    def predict(p, s, xx):
        return model.apply(p, s, xx)[0]

    exported = jax.export.export(jax.jit(predict), platforms=["cpu", "cuda"])(params, state, x)
    text = exported.mlir_module()
    assert "stablehlo.convolution" in text  # the reference lowering, kept for cuda
    got = _round_trip(exported).call(params, state, x)
    with fn.layers.set_lowering("fast"):
        np.testing.assert_array_equal(got, jax.jit(predict)(params, state, x))
