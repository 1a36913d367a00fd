"""Every error of the convolution, pooling, normalisation and embedding layers, matched by text.

Bad configuration is a ValueError naming the argument and the allowed values; a bad input shape is
a ShapeError at init (and at apply, also under jit); a bad dtype an InputTypeError. No raw XLA
error reaches the user.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn

KEY = jax.random.key(0)


def _id(value):
    """Short test ids: the layer's kind, shapes as 2x5x5x3, messages cut to their start."""
    if isinstance(value, fn.Layer):
        return value.kind
    if callable(value):
        return "make"
    if isinstance(value, tuple) and all(isinstance(d, (int, type(None))) for d in value):
        return "x".join("N" if d is None else str(d) for d in value) or "scalar"
    if isinstance(value, (str, tuple)) and (isinstance(value, str) or isinstance(value[0], str)):
        text = value if isinstance(value, str) else value[0]
        return re.sub(r"\W+", "_", text[:40]).strip("_")
    return None


@pytest.mark.parametrize(("make", "message"), ids=_id, argvalues=[
    (lambda: fn.Conv2D(0, 3), "Conv2D: `filters` must be a positive integer, got 0"),
    (lambda: fn.Conv2D(4, (3, 3, 3)),
     "Conv2D: `kernel_size` must be a positive integer or a sequence of 2 positive integers, got (3, 3, 3)"),
    (lambda: fn.Conv1D(4, 0), "Conv1D: `kernel_size` must be a positive integer or a sequence of 1"),
    (lambda: fn.Conv3D(4, (2, -1, 2)), "Conv3D: `kernel_size` must be a positive integer or a sequence of 3"),
    (lambda: fn.Conv2D(4, 3, strides=0), "Conv2D: `strides` must be a positive integer"),
    (lambda: fn.Conv2D(4, 3, dilation=(1, 0)), "Conv2D: `dilation` must be a positive integer"),
    (lambda: fn.Conv2D(4, 3, padding="full"),
     ("Conv2D: `padding` must be 'SAME', 'VALID' (in any case), a non-negative integer, or a sequence of 2 "
     "(low, high) pairs of non-negative integers, one per spatial axis, got 'full'")),
    (lambda: fn.Conv2D(4, 3, padding=((1, 1),)), ("Conv2D: `padding` must be 'SAME', 'VALID'", "got ((1, 1),).")),
    (lambda: fn.Conv1D(4, 3, padding=-1), ("Conv1D: `padding` must be", "got -1.")),
    (lambda: fn.Conv2D(3, 3, groups=2), "Conv2D: `groups`=2 must divide `filters`=3"),
    (lambda: fn.Conv2D(4, 3, groups=0), "Conv2D: `groups` must be a positive integer, got 0"),
    (lambda: fn.Conv2D(4, 3, activation="swish"), "Conv2D: unknown activation 'swish'; choose one of"),
    (lambda: fn.ConvTranspose2D(0, 3), "ConvTranspose2D: `filters` must be a positive integer"),
    (lambda: fn.ConvTranspose2D(2, 3, padding="causal"), "ConvTranspose2D: `padding` must be 'SAME', 'VALID'"),
    (lambda: fn.ConvTranspose2D(2, 3, padding=((0, 3), (1, 1))),
     ("ConvTranspose2D: explicit `padding` ((0, 3), (1, 1)) crops the output and must be at most "
     "(kernel_size - 1) * dilation = (2, 2) per axis")),
    (lambda: fn.MaxPool2D(0), "MaxPool2D: `pool_size` must be a positive integer or a sequence of 2"),
    (lambda: fn.AvgPool1D(2, strides=(1, 1)), "AvgPool1D: `strides` must be a positive integer or a sequence of 1"),
    (lambda: fn.MaxPool3D(2, padding=1), "MaxPool3D: `padding` must be 'SAME' or 'VALID' (in any case), got 1"),
    (lambda: fn.BatchNorm(momentum=1.0), "BatchNorm: `momentum` must be a number in [0, 1), got 1.0"),
    (lambda: fn.BatchNorm(momentum=-0.1), "BatchNorm: `momentum` must be a number in [0, 1), got -0.1"),
    (lambda: fn.BatchNorm(epsilon=0), "BatchNorm: `epsilon` must be a positive number, got 0"),
    (lambda: fn.LayerNorm(epsilon=-1e-5), "LayerNorm: `epsilon` must be a positive number, got -1e-05"),
    (lambda: fn.GroupNorm(0), "GroupNorm: `groups` must be a positive integer, got 0"),
    (lambda: fn.GroupNorm(2, epsilon=0.0), "GroupNorm: `epsilon` must be a positive number, got 0.0"),
    (lambda: fn.Embedding(0, 4), "Embedding: `vocab_size` must be a positive integer, got 0"),
    (lambda: fn.Embedding(10, -2), "Embedding: `features` must be a positive integer, got -2"),
])
def test_bad_configuration_is_a_value_error(make, message):
    """``message``: the text, or a tuple of parts that appear in this order."""
    parts = (message,) if isinstance(message, str) else message
    with pytest.raises(ValueError, match=".*".join(map(re.escape, parts))):
        make()


@pytest.mark.parametrize(("layer", "input_shape", "message"), ids=_id, argvalues=[
    (fn.Conv2D(4, 3), (None, 28, 28),
     ("Conv2D expects inputs of shape (batch, height, width, channels) (rank 4, sizes known past the batch), "
     "got (N, 28, 28)")),
    (fn.Conv1D(4, 3), (None, 5, 5, 1), "Conv1D expects inputs of shape (batch, length, channels)"),
    (fn.Conv3D(4, 3), (None, 5, 5, 1), "Conv3D expects inputs of shape (batch, depth, height, width, channels)"),
    (fn.ConvTranspose2D(4, 3), (None, 5), "ConvTranspose2D expects inputs of shape (batch, height, width, channels)"),
    (fn.MaxPool2D(), (None, 8, 8), "MaxPool2D expects inputs of shape (batch, height, width, channels)"),
    (fn.Conv2D(4, 3), (None, 28, None, 1), "Conv2D expects inputs of shape (batch, height, width, channels)"),
    (fn.Conv2D(4, 5), (None, 3, 3, 1), "kernel_size=(5, 5) is larger than the spatial input size (3, 3)."),
    (fn.Conv2D(4, 3, dilation=2), (None, 4, 6, 1),
     "kernel_size=(3, 3) ((5, 5) after dilation (2, 2)) is larger than the spatial input size (4, 6)."),
    (fn.Conv1D(4, 4, padding=1), (None, 1, 2), ("kernel_size=(4,) is larger than the spatial input size (1,) padded "
     "to (3,).")),
    (fn.Conv2D(4, 3, groups=2), (None, 5, 5, 3),
     "the input's 3 channels cannot be split into groups=2: both channels and filters must be divisible by groups"),
    (fn.ConvTranspose1D(2, 3, padding=2), (None, 1, 1),
     "padding ((2, 2),) crops the whole output of the transposed convolution of spatial input (1,)"),
    (fn.MaxPool2D(3), (None, 2, 5, 1), "pool_size=(3, 3) is larger than the spatial input size (2, 5)."),
    (fn.AvgPool1D(4, padding="valid"), (None, 3, 1), "pool_size=(4,) is larger than the spatial input size (3,)."),
    (fn.GlobalAvgPool(), (None, 5),
     "GlobalAvgPool expects inputs of shape (batch, *spatial, channels) with at least one spatial axis, got (N, 5)"),
    (fn.BatchNorm(), (None,), "BatchNorm expects inputs of shape (batch, ..., channels)"),
    (fn.LayerNorm(), (None, 4, None), "LayerNorm expects inputs of shape (batch, ..., channels) with a known"),
    (fn.GroupNorm(4), (None, 3, 6),
     "the input's 6 channels cannot be split into groups=4: channels must be divisible by groups"),
    (fn.Embedding(5, 2), (), "expected one array as ids, got a tuple of 0 inputs: ()"),
    (fn.Embedding(5, 2), ((None, 3), (None, 3)), "expected one array as ids, got a tuple of 2 inputs"),
    (fn.Dense(2), {"x": (None, 3)}, "expected one array as input, got a dict of 1 input: {'x': (N, 3) float32}"),
])
def test_bad_input_shape_fails_at_init(layer, input_shape, message):
    with pytest.raises(fn.ShapeError, match=re.escape(message)):
        layer.init(KEY, input_shape)


def test_missing_channels_axis_gets_a_hint():
    with pytest.raises(fn.ShapeError, match=re.escape("Hint: add a channels axis, for example Reshape((28, 28, 1))")):
        fn.Conv2D(8, 3).init(KEY, (None, 28, 28))


def test_error_inside_a_model_names_the_layer():
    model = fn.serial(fn.Conv2D(8, 3), fn.MaxPool2D(), fn.Conv2D(8, 5), fn.Flatten(), fn.Dense(10))
    message = ("Layer 'conv2d_1' (Conv2D, position 2 in its container): kernel_size=(5, 5) is larger than the "
               "spatial input size (3, 3).\nIts input was produced by 'maxpool2d_0' (MaxPool2D, position 1).")
    with pytest.raises(fn.ShapeError, match=re.escape(message)):
        model.init(KEY, (None, 8, 8, 1))


def _built(layer, input_shape):
    dtype = "int32" if layer.kind == "Embedding" else "float32"
    _, params, state = layer.init(KEY, fn.spec(input_shape, dtype))
    return params, state


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize(("layer", "built_for", "given", "message"), ids=_id, argvalues=[
    (fn.Conv2D(8, 3), (2, 5, 5, 3), (2, 5, 5, 4),
     "was built for inputs of shape (N, 5, 5, 3) (w has shape (3, 3, 3, 8)), got (2, 5, 5, 4)."),
    (fn.Conv2D(8, 3, groups=2), (2, 5, 5, 4), (2, 5, 5, 6),
     "was built for inputs of shape (N, 5, 5, 4) (w has shape (3, 3, 2, 8)), got (2, 5, 5, 6)."),
    (fn.ConvTranspose1D(2, 3), (2, 4, 3), (2, 4, 1),
     "was built for inputs of shape (N, 4, 3) (w has shape (3, 3, 2)), got (2, 4, 1)."),
    (fn.Conv2D(8, 3), (2, 5, 5, 3), (2, 5, 3), "Conv2D expects inputs of shape (batch, height, width, channels)"),
    (fn.Conv2D(8, 3), (2, 5, 5, 3), (2, 2, 5, 3), "kernel_size=(3, 3) is larger than the spatial input size (2, 5)."),
    (fn.MaxPool2D(2), (2, 4, 4, 3), (2, 1, 4, 3), "pool_size=(2, 2) is larger than the spatial input size (1, 4)."),
    (fn.GlobalMaxPool(), (2, 4, 3), (2, 3), "GlobalMaxPool expects inputs of shape (batch, *spatial, channels)"),
    (fn.BatchNorm(), (2, 4, 3), (2, 4, 5),
     "was built for inputs of shape (N, 4, 3) (scale has shape (3,)), got (2, 4, 5)."),
    (fn.BatchNorm(use_scale=False, use_bias=False), (2, 3), (2, 5),
     "was built for inputs of shape (N, 3) (state mean has shape (3,)), got (2, 5)."),
    (fn.LayerNorm(), (2, 5), (2, 4), "was built for inputs of shape (N, 5) (scale has shape (5,)), got (2, 4)."),
    (fn.GroupNorm(2, use_scale=False), (2, 3, 4), (2, 3, 6),
     "was built for inputs of shape (N, 3, 4) (bias has shape (4,)), got (2, 3, 6)."),
    (fn.GroupNorm(2, use_scale=False, use_bias=False), (2, 4), (2, 5), "the input's 5 channels cannot be split"),
])
def test_input_unlike_the_built_one_fails_at_apply(layer, built_for, given, message, jit):
    params, state = _built(layer, built_for)
    apply = jax.jit(layer.apply) if jit else layer.apply
    with pytest.raises(fn.ShapeError, match=re.escape(message)):
        apply(params, state, jnp.zeros(given))


@pytest.mark.parametrize(("layer", "shape"), ids=_id, argvalues=[
    (fn.Conv1D(2, 2), (2, 4, 1)), (fn.ConvTranspose2D(2, 2), (2, 3, 3, 1)), (fn.MaxPool1D(), (2, 4, 1)),
    (fn.AvgPool2D(), (2, 4, 4, 1)), (fn.GlobalAvgPool(), (2, 4, 1)), (fn.BatchNorm(), (2, 3)),
    (fn.LayerNorm(), (2, 3)), (fn.GroupNorm(1), (2, 3)),
])
def test_integer_images_are_an_input_type_error(layer, shape):
    params, state = _built(layer, shape)
    with pytest.raises(fn.InputTypeError, match=re.escape("expected a floating-point input, got dtype uint8.")):
        layer.apply(params, state, np.zeros(shape, np.uint8))


def test_float_ids_into_embedding_are_an_input_type_error():
    layer = fn.Embedding(10, 4)
    params, state = _built(layer, (2, 3))
    message = ("Embedding takes integer ids, got dtype float32.\nHint: pass token ids as integers, for example "
               "`x.astype('int32')`")
    with pytest.raises(fn.InputTypeError, match=re.escape(message)):
        layer.apply(params, state, jnp.zeros((2, 3)))


@pytest.mark.parametrize(("layer", "dtype", "message"), ids=_id, argvalues=[
    (fn.Embedding(10, 4), "float32", "expected ids of an integer dtype, got float32.\nHint: pass ids as integers"),
    (fn.Dense(3), "int32", "expected input of a floating dtype, got int32.\nHint: convert it first"),
    (fn.Conv2D(2, 3), "uint8", "expected input of a floating dtype, got uint8."),
    (fn.MaxPool2D(2), "int32", "expected input of a floating dtype, got int32."),
    (fn.LayerNorm(), "bool", "expected input of a floating dtype, got bool."),
])
def test_dtypes_are_checked_at_init(layer, dtype, message):
    shape = (None, 4, 4, 1) if layer.kind in ("Conv2D", "MaxPool2D") else (None, 3)
    with pytest.raises(fn.InputTypeError, match=re.escape(message)) as caught:
        layer.init(KEY, fn.spec(shape, dtype))
    assert isinstance(caught.value, fn.ShapeError)  # the dtype is part of the spec


def test_dtype_errors_at_init_name_the_layer_inside_a_model():
    model = fn.serial(fn.Flatten(), fn.Dense(3))
    with pytest.raises(fn.InputTypeError, match=r"Layer 'dense_0' \(Dense, position 1 in its container\): expected "
                                                r"input of a floating dtype, got uint8\.(.|\n)*produced by 'flatten_0'"
                                                r"(.|\n)*The model's input was \(N, 28, 28\) uint8\."):
        model.init(KEY, fn.spec((None, 28, 28), "uint8"))


@pytest.mark.parametrize(("layer", "shape", "drop"), ids=_id, argvalues=[
    (fn.Conv2D(2, 2), (2, 3, 3, 1), "b"), (fn.ConvTranspose3D(2, 2), (2, 2, 2, 2, 1), "w"),
    (fn.LayerNorm(), (2, 3), "scale"), (fn.Embedding(5, 2), (2, 3), "w"),
])
def test_params_of_another_architecture_are_a_params_error(layer, shape, drop):
    params, state = _built(layer, shape)
    del params[drop]
    x = jnp.zeros(shape, jnp.int32 if layer.kind == "Embedding" else jnp.float32)
    with pytest.raises(fn.ParamsError, match=re.escape(f"params do not match this layer: missing ['{drop}']")):
        layer.apply(params, state, x)


def test_batch_norm_without_its_state_is_a_params_error():
    layer = fn.BatchNorm()
    params, _ = _built(layer, (2, 3))
    with pytest.raises(fn.ParamsError, match=re.escape("expected state with keys ['debias', 'mean', 'var'], got []")):
        layer.apply(params, {}, jnp.zeros((2, 3)), train=True)
