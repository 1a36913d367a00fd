"""Dense: a fully connected layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from funcnet.core import (
    Array,
    Context,
    Initializer,
    Key,
    Layer,
    Params,
    ParamsError,
    State,
    array_spec,
    as_compute,
    check_callable,
    check_floating,
    check_input_shape,
    check_positive,
    check_rank,
    format_shape,
    get_params,
    spec,
)
from funcnet.layers.activations import resolve_activation

glorot_uniform = jax.nn.initializers.glorot_uniform()
zeros = jax.nn.initializers.zeros


def Dense(
    units: int,
    *,
    activation: str | Callable | None = None,
    use_bias: bool = True,
    w_init: Initializer = glorot_uniform,
    b_init: Initializer = zeros,
    rank: int = 2,
    name: str | None = None,
) -> Layer:
    """A fully connected layer: ``y = activation(x @ w + b)``.

    Args:
        units: number of output features.
        activation: applied to the output: a name (``"relu"``, see ``ACTIVATIONS``), a function or
            None.
        use_bias: whether to add ``b``.
        w_init, b_init: initializers from ``jax.nn.initializers`` (Glorot uniform, zeros).
        rank: the input rank: 2 for ``(N, features)``; 3 applies the layer to every step of a
            sequence ``(N, T, features)``, and so on.
        name: this layer's name in an enclosing model.

    Shapes:
        ``(N, ..., in_features) -> (N, ..., units)`` with ``rank`` axes in all.

    Params:
        ``{"w": (in_features, units), "b": (units,)}``.
    """
    check_positive(units, "units", "Dense")
    check_callable(w_init, "w_init", "Dense")
    check_callable(b_init, "b_init", "Dense")
    check_positive(rank - 1, "rank - 1", "Dense")
    act, act_name = resolve_activation(activation, "Dense")
    names = ("w", "b") if use_bias else ("w",)

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        del context
        x_spec = array_spec(input_spec, dtype=jnp.floating)
        input_shape = x_spec.shape
        hint = None
        if isinstance(input_shape, tuple) and len(input_shape) > rank:
            flat = 1
            for d in input_shape[1:]:
                flat *= d
            hint = (f"add Flatten() before Dense to turn {format_shape(input_shape)} into "
                    f"{format_shape((input_shape[0], flat))}")
            hint += "." if rank > 2 or len(input_shape) > 3 else (
                f", or pass rank={len(input_shape)} to apply Dense to every step of a sequence.")
        check_rank(input_shape, rank, "(batch, features)" if rank == 2 else "(batch, ..., features)", hint)
        w_key, b_key = jax.random.split(key)
        params = {"w": w_init(w_key, (input_shape[-1], units), jnp.float32)}
        if use_bias:
            params["b"] = b_init(b_key, (units,), jnp.float32)
        return spec(input_shape[:-1] + (units,), x_spec.dtype), params, {}

    def apply(params: Params, state: State, x: Array, *, key: Key | None = None,
              train: bool = False, context: Context | None = None) -> tuple[Array, State]:
        del key, train, context
        weights = get_params(params, names)
        w = weights[0]
        if w.shape[-1] != units or (use_bias and weights[1].shape != (units,)):
            raise ParamsError(f"params have shapes {[tuple(p.shape) for p in weights]} for {list(names)}, "
                              f"but this layer has units={units}.",
                              hint="were these params made by init of the same model?")
        check_floating(x)
        check_input_shape(x, (None,) * (rank - 1) + (w.shape[0],), f"w has shape {tuple(w.shape)}")
        y = x @ as_compute(w, x)
        if use_bias:
            y = y + as_compute(weights[1], x)
        return act(y), state

    config = {"units": units, "activation": act_name, "use_bias": use_bias, "rank": rank}
    return Layer(init, apply, "Dense", config, (), name)
