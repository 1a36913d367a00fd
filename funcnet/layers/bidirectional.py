"""Bidirectional: a recurrent layer run forwards and backwards over the same sequence, outputs merged."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from funcnet.core import Context, Key, Layer, LayerError, Params, ShapeError, State, as_spec, child_key, get_params
from funcnet.layers.recurrent import RNN_LAYERS
from funcnet.layers.recurrent_inputs import split_input

#: How the two directions' outputs combine; None keeps them as a tuple ``(forward, backward)``.
MERGES = ("concat", "sum", "mul", "ave", None)
_DIRECTIONS = ("forward", "backward")


@contextlib.contextmanager
def _located(direction: str, layer: Layer) -> Iterator[None]:
    """Adds the direction (``forward`` / ``backward``) to the place of a LayerError raised inside."""
    try:
        yield
    except LayerError as error:
        error.locate(direction, layer.kind, None)
        raise


def _inner_layer(layer: Any) -> Layer:
    """The wrapped layer, from a Layer of the RNN family or its recorded ``{"kind", "config"}``."""
    if isinstance(layer, Layer):
        if layer.kind not in RNN_LAYERS:
            raise TypeError(f"Bidirectional: `layer` must be one of {sorted(RNN_LAYERS)}, got a {layer.kind} layer.")
        return layer
    if not isinstance(layer, Mapping) or set(layer) != {"kind", "config"} or layer["kind"] not in RNN_LAYERS:
        raise TypeError(f"Bidirectional: `layer` must be a layer such as LSTM(32) (one of {sorted(RNN_LAYERS)}) or "
                        f"its record {{'kind': ..., 'config': ...}}, got {layer!r:.120}.")
    if not isinstance(layer["config"], Mapping):
        raise TypeError(f"Bidirectional: the recorded layer's config must be a dict, got {layer['config']!r:.80}.")
    return RNN_LAYERS[layer["kind"]](**layer["config"])


def _merged(forward: Any, backward: Any, merge: str | None) -> Any:
    if merge is None:
        return forward, backward
    if merge == "concat":
        return jnp.concatenate([forward, backward], axis=-1)
    if merge == "sum":
        return forward + backward
    if merge == "mul":
        return forward * backward
    return (forward + backward) / 2


def _merged_spec(forward: jax.ShapeDtypeStruct, merge: str | None) -> Any:
    if merge is None:
        return forward, forward
    if merge == "concat":
        return jax.ShapeDtypeStruct((*forward.shape[:-1], 2 * forward.shape[-1]), forward.dtype)
    return forward


def _split_states(x: Any) -> tuple[Any, tuple[Any, Any]]:
    """``x`` and each direction's initial state, from ``x`` or ``(x, (forward_state, backward_state))``."""
    x, initial = split_input(x)
    if initial is None:
        return x, (None, None)
    if not isinstance(initial, (tuple, list)) or len(initial) != 2:
        raise ShapeError("Bidirectional: initial_state must be a pair (forward_state, backward_state), each "
                         "structured as the wrapped layer's state.")
    return x, tuple(initial)


def _with_state(x: Any, initial: Any) -> Any:
    return x if initial is None else (x, initial)


def Bidirectional(layer: Layer | dict, *, merge: str | None = "concat", name: str | None = None) -> Layer:
    """Runs ``layer`` forwards and a copy of it backwards, and merges their outputs.

    The backward copy is ``layer`` rebuilt from its config with ``reverse`` flipped, with its own
    params; its outputs stay aligned with the input (see :func:`RNN`'s ``reverse``). With a
    ``mask``, each copy reads it, so the backward one reads each sequence's real steps from its
    last real step to its first: padding never comes first.

    Args:
        layer: an :func:`RNN`, :func:`SimpleRNN`, :func:`GRU` or :func:`LSTM` layer (its
            ``reverse`` says which way "forward" reads), or its record ``{"kind": ..., "config": ...}``.
        merge: ``"concat"`` (along the features), ``"sum"``, ``"mul"``, ``"ave"``, or None for the
            tuple ``(forward, backward)``.
        name: this layer's name in an enclosing model.

    Shapes:
        ``(N, T, features) -> (N, 2 units)`` with ``"concat"``, ``(N, units)`` with the others
        (``(N, T, ...)`` with ``return_sequences``). With the wrapped layer's ``return_state``,
        ``(merged, (forward_state, backward_state))``; an initial state is given the same way, as
        the input ``(x, (forward_state, backward_state))``.

    Params:
        ``{"forward": ..., "backward": ...}``, each the wrapped layer's.

    Raises:
        TypeError: ``layer`` is not of the RNN family.
        ValueError: an unknown ``merge``.
    """
    forward = _inner_layer(layer)
    if merge not in MERGES:
        raise ValueError(f"Bidirectional: `merge` must be one of {list(MERGES)}, got {merge!r}.")
    backward = RNN_LAYERS[forward.kind](**{**forward.config, "reverse": not forward.config["reverse"]})
    copies = dict(zip(_DIRECTIONS, (forward, backward), strict=True))
    return_state = forward.config["return_state"]

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        x_spec, initial = _split_states(as_spec(input_spec))
        specs, params = [], {}
        for position, (direction, copy) in enumerate(copies.items()):
            with _located(direction, copy):
                out, params[direction], _ = copy.init(jax.random.fold_in(key, position),
                                                      _with_state(x_spec, initial[position]), context=context)
            specs.append(out)
        if return_state:
            return (_merged_spec(specs[0][0], merge), (specs[0][1], specs[1][1])), params, {}
        return _merged_spec(specs[0], merge), params, {}

    def apply(params: Params, state: State, x: Any, *, key: Key | None = None, train: bool = False,
              context: Context | None = None) -> tuple[Any, State]:
        x, initial = _split_states(x)
        outputs = []
        for position, (direction, copy), copy_params in zip(range(2), copies.items(),
                                                            get_params(params, _DIRECTIONS), strict=True):
            with _located(direction, copy):
                out, _ = copy.apply(copy_params, {}, _with_state(x, initial[position]),
                                    key=child_key(key, position), train=train, context=context)
            outputs.append(out)
        if return_state:
            return (_merged(outputs[0][0], outputs[1][0], merge), (outputs[0][1], outputs[1][1])), state
        return _merged(outputs[0], outputs[1], merge), state

    config = {"layer": {"kind": forward.kind, "config": dict(forward.config)}, "merge": merge}
    return Layer(init, apply, "Bidirectional", config, (), name)
