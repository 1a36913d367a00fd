"""Bad models, inputs and configurations fail early, naming the layer, both shapes and a fix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn


def mlp():
    return fn.Sequential([fn.Flatten(), fn.Dense(16, activation="relu"), fn.Dense(10)])


def test_dense_after_a_feature_map_fails_at_init_with_position_source_and_flatten_hint(key):
    model = fn.serial(fn.Dense(4, name="stem", rank=4), fn.Relu(), fn.Dense(10))
    with pytest.raises(fn.ShapeError) as caught:
        model.init(key, (None, 5, 5, 3))
    message = str(caught.value)
    assert "Layer 'dense_0' (Dense, position 2 in its container)" in message
    assert "expected input of rank 2 (batch, features), got shape (N, 5, 5, 4)" in message
    assert "Its input was produced by 'relu_0' (Relu, position 1)" in message
    assert "Hint: add Flatten() before Dense to turn (N, 5, 5, 4) into (N, 100)." in message


def test_sequence_input_to_dense_suggests_rank(key):
    with pytest.raises(fn.ShapeError, match=r"or pass rank=3 to apply Dense to every step of a sequence"):
        fn.serial(fn.Dense(3)).init(key, (None, 7, 4))


def test_nested_errors_report_the_full_path(key):
    model = fn.serial(fn.Flatten(), fn.named("encoder", fn.serial(fn.Dense(8), fn.Reshape((2, 4)), fn.Dense(2))))
    with pytest.raises(fn.ShapeError, match=r"Layer 'encoder/dense_1' \(Dense, position 2 in its container\)"
                                            r"(.|\n)*produced by 'encoder/reshape_0' \(Reshape, position 1\)"):
        model.init(key, (None, 3, 3))


def test_the_producing_layer_is_named_by_full_path_when_the_top_level_has_one_of_that_name(key):
    """Issue 11 item 12: 'conv2d_0' alone would name the top-level layer, not the one inside the block."""
    model = fn.serial(fn.Conv2D(2, 3, padding="same"),
                      fn.residual(fn.Conv2D(2, 3, padding="same"), fn.Dense(3)))
    with pytest.raises(fn.ShapeError) as caught:
        model.init(key, (None, 5, 5, 1))
    message = str(caught.value)
    assert "Layer 'residual_0/dense_0' (Dense, position 1 in its container)" in message
    assert "Its input was produced by 'residual_0/conv2d_0' (Conv2D, position 0)." in message
    assert "The model's input was (N, 5, 5, 1) float32." in message


def test_apply_with_another_input_shape_names_layer_both_shapes_and_model_input(key):
    model = mlp()
    _, params, state = model.init(key, (None, 28, 28, 1))
    with pytest.raises(fn.ShapeError) as caught:
        model.apply(params, state, jnp.ones((2, 32, 32, 1)))
    message = str(caught.value)
    assert "Layer 'dense_0' (Dense, position 1 in its container)" in message
    assert "built for inputs of shape (N, 784) (w has shape (784, 16)), got (2, 1024)" in message
    assert "produced by 'flatten_0' (Flatten, position 0)" in message
    assert "The model's input was (2, 32, 32, 1) float32." in message


def test_apply_errors_are_raised_under_jit_too(key):
    model = mlp()
    _, params, state = model.init(key, (None, 28, 28, 1))
    with pytest.raises(fn.ShapeError, match=r"got \(2, 1024\)"):
        jax.jit(lambda p, x: model.apply(p, state, x))(params, jnp.ones((2, 32, 32, 1)))


def test_params_of_another_architecture_are_rejected_by_name(key):
    _, params, state = mlp().init(key, (None, 28, 28, 1))
    other = fn.Sequential([fn.Flatten(), fn.Dense(16), fn.Dense(10), fn.Dense(3)])
    with pytest.raises(fn.ParamsError, match=r"'dense_2' \(Dense, position 3.*params have shapes "
                                             r"\[\(16, 10\), \(10,\)\] for \['w', 'b'\], but this layer has units=3"):
        other.apply({**params, "dense_2": params["dense_1"]}, state, jnp.ones((2, 28, 28, 1)))
    with pytest.raises(fn.ParamsError, match=r"params has entries \['conv2d_0'\] that match no layer here"):
        mlp().apply({**params, "conv2d_0": {}}, state, jnp.ones((2, 28, 28, 1)))
    missing = {"dense_0": {"w": params["dense_0"]["w"]}, "dense_1": params["dense_1"]}
    with pytest.raises(fn.ParamsError, match=r"'dense_0'(.|\n)*missing \['b'\], unexpected \[\]"):
        mlp().apply(missing, state, jnp.ones((2, 28, 28, 1)))


def test_integer_images_are_a_type_error_with_a_hint(key):
    model = mlp()
    _, params, state = model.init(key, (None, 28, 28, 1))
    with pytest.raises(fn.InputTypeError, match=r"floating-point input, got dtype uint8(.|\n)*/ 255"):
        model.apply(params, state, np.zeros((2, 28, 28, 1), np.uint8))


def test_dropout_in_training_without_a_key_says_how_to_pass_one(key):
    model = fn.serial(fn.Dense(3), fn.Dropout(0.5))
    _, params, state = model.init(key, (None, 2))
    with pytest.raises(fn.MissingKeyError, match=r"'dropout_0'(.|\n)*train=True needs a random key(.|\n)*key=jax"):
        model.apply(params, state, jnp.ones((1, 2)), train=True)
    y, _ = model.apply(params, state, jnp.ones((1, 2)))  # evaluation needs none
    assert y.shape == (1, 3)


@pytest.mark.parametrize("make, message", [
    (lambda: fn.Dense(0), r"Dense: `units` must be a positive integer, got 0"),
    (lambda: fn.Dense(2.5), r"Dense: `units` must be a positive integer, got 2.5"),
    (lambda: fn.Dense(3, rank=1), r"Dense: `rank - 1` must be a positive integer, got 0"),
    (lambda: fn.Dense(3, activation="swishy"), r"unknown activation 'swishy'; choose one of \['elu', 'gelu'"),
    (lambda: fn.Dropout(1.0), r"Dropout: `rate` is the probability of dropping and must be in \[0, 1\), got 1.0"),
    (lambda: fn.Dropout(-0.1), r"must be in \[0, 1\), got -0.1"),
    (lambda: fn.Reshape((2, -1, -1)), r"Reshape: `shape` must hold positive integers and at most one -1"),
    (lambda: fn.FanOut(0), r"FanOut: `num` must be a positive integer, got 0"),
    (lambda: fn.named("a/b", fn.Relu()), r"named: `name` must be a non-empty string without '/'"),
])
def test_bad_configuration_names_the_argument_and_allowed_values(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_reshape_that_cannot_fit_fails_at_init(key):
    with pytest.raises(fn.ShapeError, match=r"cannot reshape examples of shape \(3, 4\) \(12 values\) into \(5, -1\)"):
        fn.serial(fn.Reshape((5, -1))).init(key, (None, 3, 4))


def test_params_with_other_units_are_rejected(key):
    _, params, _ = fn.serial(fn.Dense(5)).init(key, (None, 3))
    with pytest.raises(fn.ParamsError,
                       match=r"'dense_0'(.|\n)*params have shapes \[\(3, 5\), \(5,\)\] for \['w', 'b'\], "
                       r"but this layer has units=10"):
        fn.serial(fn.Dense(10)).apply(params, {}, jnp.ones((2, 3)))
