"""Fan-out, fan-in and selection: parameter-free layers that make, merge or pick streams (any pytrees)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from funcnet.core import (
    Context,
    Key,
    Layer,
    Params,
    ParamsError,
    ShapeError,
    Spec,
    State,
    as_spec,
    format_shape,
    format_spec,
    spec_of,
)


def _stateless(kind: str, config: dict, name: str | None, out_spec, fn) -> Layer:
    """A layer without params whose output spec is ``out_spec(spec)`` and output ``fn(x)``."""

    def init(key: Key, input_spec: Spec, *, context: Context | None = None) -> tuple[Spec, Params, State]:
        del key, context
        return out_spec(as_spec(input_spec)), {}, {}

    def apply(params: Params, state: State, x: Any, *, key: Key | None = None, train: bool = False,
              context: Context | None = None) -> tuple[Any, State]:
        del key, train, context
        if params:
            raise ParamsError(f"this layer has no parameters, got entries {sorted(params)}.")
        out_spec(spec_of(x))
        return fn(x), state

    return Layer(init, apply, kind, config, (), name)


def FanOut(num: int, name: str | None = None) -> Layer:
    """Copies its input (any pytree) into a tuple of ``num`` streams: ``x -> (x,) * num``."""
    if not isinstance(num, int) or num < 1:
        raise ValueError(f"FanOut: `num` must be a positive integer, got {num!r}.")
    return _stateless("FanOut", {"num": num}, name, lambda spec: (spec,) * num, lambda x: (x,) * num)


def _streams(specs: Any) -> list[Any]:
    """The streams a fan-in merges: a tuple or list of at least one pytree, all of one structure, or
    a dict of them (taken in sorted key order, the order JAX gives a dict's leaves)."""
    if isinstance(specs, Mapping) and specs:
        specs = [specs[k] for k in sorted(specs)]
    if not isinstance(specs, (tuple, list)) or not specs:
        raise ShapeError(f"expected a tuple of inputs to merge, got {format_spec(specs)}.",
                         hint="put FanOut(n), branch(...) or parallel(...) before it.")
    structures = [jax.tree.structure(s) for s in specs]
    if any(s != structures[0] for s in structures):
        raise ShapeError(f"inputs to merge must share one structure, got {format_spec(specs)}.")
    return list(specs)


def FanInSum(name: str | None = None) -> Layer:
    """Adds a tuple of inputs of one spec, leaf by leaf: ``(x_0, ..., x_n) -> x_0 + ... + x_n``.

    A dict of inputs is added too (``parallel({...})``'s output).
    """

    def out_spec(specs: Any) -> Any:
        streams = _streams(specs)
        for i, other in enumerate(streams[1:], start=1):
            for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(streams[0]), jax.tree.leaves(other),
                                    strict=True):
                if tuple(a.shape[1:]) != tuple(b.shape[1:]):
                    raise ShapeError(f"inputs must share one shape to be added, got {format_spec(specs)}"
                                     f" (x[0]{jax.tree_util.keystr(path)} and x[{i}]{jax.tree_util.keystr(path)} "
                                     "differ).")
        return streams[0]

    return _stateless("FanInSum", {}, name, out_spec,
                      lambda xs: jax.tree.map(lambda *leaves: sum(leaves[1:], leaves[0]), *_streams(xs)))


def FanInConcat(axis: int = -1, name: str | None = None) -> Layer:
    """Concatenates a tuple of inputs along ``axis`` (default: the last, channels), leaf by leaf.

    A dict of inputs (``parallel({...})``'s output) is concatenated in sorted key order.
    """
    if not isinstance(axis, int):
        raise ValueError(f"FanInConcat: `axis` must be an integer, got {axis!r}.")

    def concat_spec(path: Any, *leaves: Any) -> Any:
        shapes = [tuple(leaf.shape) for leaf in leaves]
        where = f" at x[i]{jax.tree_util.keystr(path)}" if path else ""
        rank = len(shapes[0])
        if not -rank < axis < rank or axis % rank == 0:
            raise ShapeError(f"cannot concatenate along axis {axis} of inputs of rank {rank}{where} "
                             "(axis 0 is the batch).")
        ax = axis % rank
        rest = [tuple(d for i, d in enumerate(s) if i not in (0, ax)) for s in shapes]
        if any(len(s) != rank for s in shapes) or any(r != rest[0] for r in rest):
            raise ShapeError(f"inputs must agree on every axis but {axis}{where}, got "
                             f"{', '.join(map(format_shape, shapes))}.")
        return jax.ShapeDtypeStruct(shapes[0][:ax] + (sum(s[ax] for s in shapes),) + shapes[0][ax + 1:],
                                    jnp.result_type(*(leaf.dtype for leaf in leaves)))

    def out_spec(specs: Any) -> Any:
        streams = _streams(specs)
        return jax.tree_util.tree_map_with_path(concat_spec, *streams)

    return _stateless("FanInConcat", {"axis": axis}, name, out_spec,
                      lambda xs: jax.tree.map(lambda *leaves: jnp.concatenate(leaves, axis=axis), *_streams(xs)))


def Select(entry: int | str, name: str | None = None) -> Layer:
    """Keeps one entry of a tuple, list or dict input and drops the rest: ``x -> x[entry]``.

    ``serial(LSTM(64, return_state=True), Select(1))`` keeps the final state of the LSTM's
    ``(outputs, state)``; ``Select("tokens")`` keeps one entry of a dict input.

    Args:
        entry: a position in a tuple or list (negative counts from the end), or a key of a dict.
        name: the layer's name.

    Returns:
        A layer without params or state whose output is the selected entry, with its spec.
    """
    if isinstance(entry, bool) or not isinstance(entry, (int, str)):
        raise ValueError(f"Select: `entry` must be a position (int) or a dict key (str), got {entry!r}.")

    def out_spec(spec: Any) -> Any:
        if isinstance(entry, str):
            if not isinstance(spec, Mapping) or entry not in spec:
                got = f"a dict with keys {sorted(spec)}" if isinstance(spec, Mapping) else format_spec(spec)
                raise ShapeError(f"expected a dict input with the key {entry!r}, got {got}.")
        elif not isinstance(spec, (tuple, list)) or not -len(spec) <= entry < len(spec):
            got = f"{len(spec)} entries" if isinstance(spec, (tuple, list)) else format_spec(spec)
            raise ShapeError(f"expected a tuple or list input with an entry at position {entry}, got {got}.",
                             hint="a dict input is selected by key: Select('name').")
        return spec[entry]

    return _stateless("Select", {"entry": entry}, name, out_spec, lambda x: x[entry])
