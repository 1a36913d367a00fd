"""Normalisation layers: BatchNorm, LayerNorm, GroupNorm and RMSNorm, over channels-last inputs.

Each standardises its input, ``(x - mean) / sqrt(var + epsilon)`` with the biased variance
(the mean of squared deviations), then applies a learned per-channel ``scale`` and ``bias``; RMSNorm
divides by the root mean square instead and has only a ``scale``. The statistics are computed in
at least float32, and the output has the input's dtype.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from funcnet.core import (
    Array,
    Context,
    Key,
    Layer,
    Params,
    ParamsError,
    ShapeError,
    State,
    array_spec,
    check_floating,
    check_input_shape,
    format_shape,
    get_params,
)


def _check_config(kind: str, epsilon: Any, momentum: Any = None) -> None:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not number(epsilon) or not epsilon > 0:
        raise ValueError(f"{kind}: `epsilon` must be a positive number, got {epsilon!r}.")
    if momentum is not None and (not number(momentum) or not 0 <= momentum < 1):
        raise ValueError(f"{kind}: `momentum` must be a number in [0, 1), got {momentum!r}.")


def _channels(kind: str, shape: Any) -> int:
    """Checks a ``(batch, ..., channels)`` shape (at init or apply); returns the channels."""
    if (not isinstance(shape, tuple) or len(shape) < 2 or not isinstance(shape[-1], int)
            or isinstance(shape[-1], bool) or shape[-1] < 1):
        raise ShapeError(f"{kind} expects inputs of shape (batch, ..., channels) with a known "
                         f"number of channels, got {format_shape(shape)}.")
    return shape[-1]


def _affine_names(use_scale: bool, use_bias: bool) -> tuple[str, ...]:
    return ("scale",) * use_scale + ("bias",) * use_bias


def _affine_params(names: Sequence[str], channels: int) -> Params:
    make = {"scale": jnp.ones, "bias": jnp.zeros}
    return {n: make[n]((channels,), jnp.float32) for n in names}


@partial(jax.jit, static_argnames=("axes", "groups", "epsilon"))
def _standardize(x: Array, scale: Array | None, bias: Array | None, mean: Array | None,
                 var: Array | None, *, axes: tuple[int, ...], groups: int | None,
                 epsilon: float) -> tuple[Array, Array, Array]:
    """The computation of all three layers, compiled as one (eager calls stay fast; inside an outer
    ``jit`` it is inlined).

    Views ``x`` as ``(..., groups, C // groups)`` (``x`` itself when ``groups`` is None), standardises
    it over ``axes`` of that view (with the given ``mean`` and ``var``, of a shape that broadcasts
    against it, if not None), applies
    ``scale`` and ``bias`` per channel and returns ``(y, mean, var)``, statistics computed in at
    least float32 and ``y`` in ``x``'s dtype.
    """
    xc = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    # groups=None (LayerNorm): no view; XLA's CPU backend runs the reductions over a (..., 1, C) view
    # and their gradients about half as fast as over (..., C).
    view = xc if groups is None else xc.reshape(*x.shape[:-1], groups, x.shape[-1] // groups)
    if mean is None:
        mean, var = jnp.mean(view, axes, keepdims=True), jnp.var(view, axes, keepdims=True)
    else:
        mean, var = mean.astype(xc.dtype), var.astype(xc.dtype)
    y = ((view - mean) * jax.lax.rsqrt(var + epsilon)).reshape(x.shape)
    if scale is not None:
        y = y * scale.astype(y.dtype)
    if bias is not None:
        y = y + bias.astype(y.dtype)
    return y.astype(x.dtype), mean, var


@partial(jax.jit, static_argnames=("momentum",))
def _moving_average(running: State, batch: State, momentum: float) -> State:
    """``momentum * running + (1 - momentum) * batch`` for every entry, in the running dtype.

    The entry ``debias`` averages a constant 1 the same way, so it holds ``1 - momentum**steps``
    (for zero-initialised averages): the weight the averages have given to data so far.
    """
    batch = {**batch, "debias": jnp.ones_like(running["debias"])}
    new = {k: momentum * running[k] + (1 - momentum) * batch[k] for k in running}
    return {k: jax.lax.stop_gradient(v).astype(running[k].dtype) for k, v in new.items()}


@jax.jit
def _running_statistics(state: State) -> tuple[Array, Array]:
    """The debiased running ``(mean, var)``: each average divided by its weight ``debias``.

    As Adam corrects its moments, this removes the pull towards the zero start, so the statistics
    are right after a few steps; as ``debias`` tends to 1 it changes nothing. Before any training
    step (``debias`` 0) they are mean 0 and variance 1, the identity standardisation.
    """
    trained = state["debias"] > 0
    weight = jnp.where(trained, state["debias"], 1)
    return (jnp.where(trained, state["mean"] / weight, 0),
            jnp.where(trained, state["var"] / weight, 1))


def _check_apply(kind: str, params: Params, names: Sequence[str],
                 x: Array) -> tuple[Array | None, Array | None]:
    """The apply-time checks shared by the three layers; returns ``(scale, bias)`` (None if
    unused)."""
    weights = get_params(params, names)
    check_floating(x)
    _channels(kind, tuple(x.shape))
    if weights:
        check_input_shape(x, (None, *x.shape[1:-1], weights[0].shape[0]),
                          f"{names[0]} has shape {tuple(weights[0].shape)}")
    return params.get("scale"), params.get("bias")


def BatchNorm(momentum: float = 0.99, epsilon: float = 1e-3, use_scale: bool = True,
              use_bias: bool = True, name: str | None = None) -> Layer:
    """Batch normalisation: standardises each channel over the batch and every other axis.

    With ``train=True`` it uses the batch's mean and (biased) variance over every axis but the
    last, and returns updated running averages,
    ``running = momentum * running + (1 - momentum) * batch`` (for the variance, the biased
    batch variance, as Keras and Flax do; PyTorch uses the unbiased one). With ``train=False``
    it uses the running statistics and returns the state unchanged.

    The running averages start at zero and are zero-debiased, as Adam corrects its moments:
    ``debias`` is averaged the same way from a constant 1, so after ``t`` steps it is
    ``1 - momentum**t``, and evaluation uses ``mean / debias`` and ``var / debias``. Eval mode is
    therefore right after a few steps (with momentum 0.99, undebiased averages would still be 67%
    their start after 40 steps); once ``debias`` reaches 1 (long runs) this is the plain moving
    average. Before the first training step eval mode uses mean 0 and variance 1.

    In training mode each example's output depends on the whole batch, the one exception to the
    per-example rule of :mod:`funcnet.core` (so results equal those of ``jax.vmap`` over single
    examples only with ``train=False``). The running statistics are state, not parameters: pass
    the returned state to the next step.

    Args:
        momentum: weight of the old running statistics, in ``[0, 1)``.
        epsilon: added to the variance, > 0.
        use_scale, use_bias: whether to learn a per-channel ``scale`` (initialised to 1) and
            ``bias`` (initialised to 0).
        name: this layer's name in an enclosing model.

    Shapes:
        ``(N, ..., C) -> (N, ..., C)``, rank 2 or more.

    Params and state:
        params ``{"scale": (C,), "bias": (C,)}``; state ``{"mean": (C,), "var": (C,), "debias": ()}``,
        all float32 zeros at init. (Checkpoints of format version 1 hold no ``debias``: restoring
        them adds ``debias = 1``, which keeps their averages as they were used then.)
    """
    _check_config("BatchNorm", epsilon, momentum)
    names = _affine_names(use_scale, use_bias)

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        del key, context
        x_spec = array_spec(input_spec, dtype=jnp.floating)
        input_shape = x_spec.shape
        channels = _channels("BatchNorm", input_shape)
        state = {"mean": jnp.zeros((channels,), jnp.float32), "var": jnp.zeros((channels,), jnp.float32),
                 "debias": jnp.zeros((), jnp.float32)}
        return x_spec, _affine_params(names, channels), state

    def apply(params: Params, state: State, x: Array, *, key: Key | None = None,
              train: bool = False, context: Context | None = None) -> tuple[Array, State]:
        del key, context
        scale, bias = _check_apply("BatchNorm", params, names, x)
        if not isinstance(state, Mapping) or set(state) != {"mean", "var", "debias"}:
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ParamsError(
                f"expected state with keys ['debias', 'mean', 'var'], got {got}.",
                hint="pass the state that init (or the previous training step) returned; a state saved by an older "
                     "funcnet (no 'debias') is migrated by funcnet.checkpoint.restore.")
        running_mean = state["mean"]
        channels = running_mean.shape[0]
        check_input_shape(x, (None, *x.shape[1:-1], channels),
                          f"state mean has shape {tuple(running_mean.shape)}")
        # One group per channel: the statistics are over every axis but the channels.
        axes = (*range(x.ndim - 1), x.ndim)
        options = {"axes": axes, "groups": channels, "epsilon": epsilon}
        if not train:
            mean, var = _running_statistics(state)
            y, _, _ = _standardize(x, scale, bias, mean.reshape(channels, 1), var.reshape(channels, 1), **options)
            return y, state
        y, mean, var = _standardize(x, scale, bias, None, None, **options)
        batch = {"mean": mean.reshape(channels), "var": var.reshape(channels)}
        return y, _moving_average(state, batch, momentum)

    config = {"momentum": momentum, "epsilon": epsilon, "use_scale": use_scale,
              "use_bias": use_bias}
    return Layer(init, apply, "BatchNorm", config, (), name)


def LayerNorm(epsilon: float = 1e-5, use_scale: bool = True, use_bias: bool = True,
              name: str | None = None) -> Layer:
    """Layer normalisation: standardises each example over its last axis (the features).

    Args:
        epsilon: added to the variance, > 0.
        use_scale, use_bias: whether to learn a per-feature ``scale`` (1) and ``bias`` (0).
        name: this layer's name in an enclosing model.

    Shapes:
        ``(N, ..., C) -> (N, ..., C)``, rank 2 or more; each position is normalised on its own.

    Params:
        ``{"scale": (C,), "bias": (C,)}``. No state.
    """
    _check_config("LayerNorm", epsilon)
    names = _affine_names(use_scale, use_bias)

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        del key, context
        x_spec = array_spec(input_spec, dtype=jnp.floating)
        input_shape = x_spec.shape
        return x_spec, _affine_params(names, _channels("LayerNorm", input_shape)), {}

    def apply(params: Params, state: State, x: Array, *, key: Key | None = None,
              train: bool = False, context: Context | None = None) -> tuple[Array, State]:
        del key, train, context
        scale, bias = _check_apply("LayerNorm", params, names, x)
        y, _, _ = _standardize(x, scale, bias, None, None, axes=(-1,), groups=None, epsilon=epsilon)
        return y, state

    config = {"epsilon": epsilon, "use_scale": use_scale, "use_bias": use_bias}
    return Layer(init, apply, "LayerNorm", config, (), name)


def GroupNorm(groups: int = 32, epsilon: float = 1e-5, use_scale: bool = True,
              use_bias: bool = True, name: str | None = None) -> Layer:
    """Group normalisation: splits the channels into ``groups`` groups of consecutive channels and
    standardises each group of each example over its channels and every spatial axis.

    ``groups=1`` normalises each example as a whole; ``groups=C`` is instance normalisation.

    Args:
        groups: number of groups; the input's channels must be divisible by it.
        epsilon: added to the variance, > 0.
        use_scale, use_bias: whether to learn a per-channel ``scale`` (1) and ``bias`` (0).
        name: this layer's name in an enclosing model.

    Shapes:
        ``(N, ..., C) -> (N, ..., C)``, rank 2 or more.

    Params:
        ``{"scale": (C,), "bias": (C,)}``. No state.
    """
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"GroupNorm: `groups` must be a positive integer, got {groups!r}.")
    _check_config("GroupNorm", epsilon)
    names = _affine_names(use_scale, use_bias)

    def channels(shape: Any) -> int:
        c = _channels("GroupNorm", shape)
        if c % groups:
            raise ShapeError(f"the input's {c} channels cannot be split into groups={groups}: "
                             "channels must be divisible by groups.")
        return c

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        del key, context
        x_spec = array_spec(input_spec, dtype=jnp.floating)
        input_shape = x_spec.shape
        return x_spec, _affine_params(names, channels(input_shape)), {}

    def apply(params: Params, state: State, x: Array, *, key: Key | None = None,
              train: bool = False, context: Context | None = None) -> tuple[Array, State]:
        del key, train, context
        scale, bias = _check_apply("GroupNorm", params, names, x)
        channels(tuple(x.shape))
        axes = (*range(1, x.ndim - 1), -1)  # of the view (N, ..., groups, C // groups)
        y, _, _ = _standardize(x, scale, bias, None, None, axes=axes, groups=groups,
                               epsilon=epsilon)
        return y, state

    config = {"groups": groups, "epsilon": epsilon, "use_scale": use_scale, "use_bias": use_bias}
    return Layer(init, apply, "GroupNorm", config, (), name)


@partial(jax.jit, static_argnames=("epsilon",))
def _rms_normalize(x: Array, scale: Array, *, epsilon: float) -> Array:
    """``x / sqrt(mean(x**2) + epsilon) * scale`` over the last axis, in at least float32, returned in x's dtype."""
    xc = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    y = xc * jax.lax.rsqrt(jnp.mean(jnp.square(xc), axis=-1, keepdims=True) + epsilon)
    return (y * scale.astype(y.dtype)).astype(x.dtype)


def RMSNorm(*, epsilon: float = 1e-6, name: str | None = None) -> Layer:
    """Root-mean-square normalisation (Zhang and Sennrich 2019): ``y = x / sqrt(mean(x**2) + epsilon) * scale``.

    The mean is over the last axis (the features) of each position; unlike LayerNorm nothing is
    subtracted and there is no bias. Statistics are computed in at least float32; the output has the
    input's dtype.

    Args:
        epsilon: added to the mean square, > 0.
        name: this layer's name in an enclosing model.

    Shapes:
        ``(N, ..., C) -> (N, ..., C)``, rank 2 or more.

    Params:
        ``{"scale": (C,)}``, initialised to ones. No state.
    """
    _check_config("RMSNorm", epsilon)

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        del key, context
        x_spec = array_spec(input_spec, dtype=jnp.floating)
        return x_spec, _affine_params(("scale",), _channels("RMSNorm", x_spec.shape)), {}

    def apply(params: Params, state: State, x: Array, *, key: Key | None = None,
              train: bool = False, context: Context | None = None) -> tuple[Array, State]:
        del key, train, context
        scale, _ = _check_apply("RMSNorm", params, ("scale",), x)
        return _rms_normalize(x, scale, epsilon=epsilon), state

    return Layer(init, apply, "RMSNorm", {"epsilon": epsilon}, (), name)
