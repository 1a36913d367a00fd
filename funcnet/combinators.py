"""Combinators: layers made of layers, over any pytree of inputs.

Every combinator hands each child its own params and state (by the child's name), the ``train``
flag, the ``context`` (side inputs, unchanged) and its own key (``fold_in(key, position)``), and
reports errors with the child's place. A child's name is the one the user gave (``name=`` or
:func:`named`, or its key in ``parallel({...})``), else ``<kind>_<count>`` counted per kind within
the container: ``serial(Dense(8), Relu(), Dense(2))`` has params ``{"dense_0": ..., "dense_1": ...}``
(layers without params or state take no entry).

Inputs and outputs are pytrees (tuples, lists, dicts of arrays): ``serial`` threads whatever its
children take and give, ``parallel`` and ``branch`` work over tuples or dicts, ``residual`` and the
fan-ins add or concatenate leaf by leaf, and errors name the leaf (``x['mask']``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax

from funcnet.core import (
    Context,
    Key,
    Layer,
    LayerError,
    Params,
    ParamsError,
    ShapeError,
    Spec,
    State,
    as_spec,
    child_key,
    child_names,
    children_penalty,
    describe_inputs,
    format_shape,
    format_spec,
)
from funcnet.fan import FanInConcat, FanInSum, FanOut, Select
from funcnet.side_inputs import with_context

__all__ = [
    "FanInConcat",
    "FanInSum",
    "FanOut",
    "Select",
    "Sequential",
    "branch",
    "named",
    "parallel",
    "residual",
    "serial",
    "with_context",
]


@contextlib.contextmanager
def _located(names: Sequence[str], layers: Sequence[Layer], position: int, source: int | None,
             model_input: Any) -> Iterator[None]:
    """Adds the failing child's place, the sibling that produced its input, and the model's input
    (a spec or the arrays) to a LayerError."""
    try:
        yield
    except LayerError as error:
        error.locate(names[position], layers[position].kind, position)
        if source is not None:
            error.set_source(names[source], layers[source].kind, source)
        error.model_input = format_spec(model_input)
        raise


def _check_children_keys(tree: Any, names: Sequence[str], what: str) -> None:
    """Raises ParamsError if ``tree`` (params or state) is not a dict of known children."""
    if not isinstance(tree, dict):
        raise ParamsError(f"expected {what} to be a dict keyed by layer name, got {type(tree).__name__}.")
    unknown = sorted(set(tree) - set(names))
    if unknown:
        raise ParamsError(
            f"{what} has entries {unknown} that match no layer here (layers: {list(names)}).",
            hint=f"were these {what} made by init of the same model?",
        )


def _collect(into: dict, name: str, tree: dict) -> None:
    if tree:
        into[name] = tree


def _children(layers: tuple) -> tuple[Layer, ...]:
    """Accepts ``f(a, b, c)`` and ``f([a, b, c])``; checks that each item is a Layer."""
    if len(layers) == 1 and isinstance(layers[0], (list, tuple)) and not isinstance(layers[0], Layer):
        layers = tuple(layers[0])
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"argument {i} is a {type(layer).__name__}, not a Layer; layer constructors are called, "
                "as in `Relu()`."
            )
    return layers


def _keyed_children(layers: tuple, owner: str) -> tuple[tuple[Layer, ...], list[str] | None]:
    """``f({"a": la, "b": lb})`` gives children named by their keys and the keys; else ``f(*layers)``."""
    if len(layers) != 1 or not isinstance(layers[0], Mapping):
        return _children(layers), None
    keys = list(layers[0])
    for key in keys:
        if not isinstance(key, str) or not key or "/" in key:
            raise ValueError(f"{owner}: dict keys name the children and must be non-empty strings without "
                             f"'/', got {key!r}.")
    children = _children(tuple(layers[0].values()))
    return tuple(child._replace(name=key) for key, child in zip(keys, children, strict=True)), keys


def serial(*layers: Layer, name: str | None = None) -> Layer:
    """Chains layers: each one's output is the next one's input.

    Args:
        *layers: the layers in order (a single list is accepted too).
        name: this layer's name in an enclosing model.

    Returns:
        A Layer. Input spec: that of the first layer (any pytree); output spec: that of the last.
        Params and state: ``{child_name: child_params}`` for children that have any.
    """
    layers = _children(layers)
    names = child_names(layers)

    def init(key: Key, input_spec: Spec, *, context: Context | None = None) -> tuple[Spec, Params, State]:
        params, state = {}, {}
        model_input = spec = as_spec(input_spec)
        for i, (child_name, child) in enumerate(zip(names, layers, strict=True)):
            with _located(names, layers, i, i - 1 if i else None, model_input):
                spec, child_params, child_state = child.init(child_key(key, i), spec, context=context)
            _collect(params, child_name, child_params)
            _collect(state, child_name, child_state)
        return spec, params, state

    def apply(params: Params, state: State, x: Any, *, key: Key | None = None, train: bool = False,
              context: Context | None = None) -> tuple[Any, State]:
        _check_children_keys(params, names, "params")
        _check_children_keys(state, names, "state")
        model_input, new_state = x, {}
        for i, (child_name, child) in enumerate(zip(names, layers, strict=True)):
            with _located(names, layers, i, i - 1 if i else None, model_input):
                x, child_state = child.apply(params.get(child_name, {}), state.get(child_name, {}), x,
                                             key=child_key(key, i), train=train, context=context)
            _collect(new_state, child_name, child_state)
        return x, new_state

    return Layer(init, apply, "Serial", {}, layers, name, children_penalty(layers, names))


def Sequential(layers: Sequence[Layer], name: str | None = None) -> Layer:
    """Keras-style spelling of :func:`serial`: ``Sequential([Dense(64), Relu(), Dense(10)])``."""
    return serial(*layers, name=name)


def _split_input(x: Any, n: int, keys: list[str] | None, what: str) -> list[Any]:
    """The n inputs of a parallel layer, from a tuple/list of n (or a dict with exactly ``keys``)."""
    if keys is not None:
        if not isinstance(x, Mapping) or sorted(x) != sorted(keys):
            got = f"a dict with keys {sorted(x)}" if isinstance(x, Mapping) else format_spec(x)
            raise ShapeError(f"expected a dict of {what} with keys {sorted(keys)}, got {got}.",
                             hint="give one entry per child, by the same names as in parallel({...}).")
        return [x[k] for k in keys]
    if not isinstance(x, (tuple, list)) or len(x) != n:
        got = describe_inputs(x) if isinstance(x, (tuple, list, Mapping)) else format_spec(x)
        raise ShapeError(f"expected a tuple of {n} {what}, got {got}.",
                         hint="put FanOut(n) or branch(...) before it to make several inputs from one.")
    return list(x)


def _join_output(outputs: list[Any], keys: list[str] | None) -> Any:
    return tuple(outputs) if keys is None else dict(zip(keys, outputs, strict=True))


def parallel(*layers: Layer, name: str | None = None) -> Layer:
    """Applies the i-th layer to the i-th input: ``(x_0, ..., x_n) -> (f_0(x_0), ..., f_n(x_n))``.

    Also over dicts: ``parallel({"image": a, "meta": b})`` maps ``{"image": x, "meta": m}`` to
    ``{"image": a(x), "meta": b(m)}``; the keys are the children's names in params, state and the
    architecture JSON.

    Args:
        *layers: one layer per input (a single list is accepted too), or a single dict of them.
        name: this layer's name in an enclosing model.

    Returns:
        A Layer taking a tuple (or list) of n inputs, or a dict with the given keys, and giving a
        tuple of n outputs, or a dict. Params and state: ``{child_name: child_params}``.
    """
    layers, keys = _keyed_children(layers, "parallel")
    names = child_names(layers)

    def init(key: Key, input_spec: Spec, *, context: Context | None = None) -> tuple[Spec, Params, State]:
        spec = as_spec(input_spec)
        inputs = _split_input(spec, len(layers), keys, "input specs")
        params, state, specs = {}, {}, []
        for i, (child_name, child) in enumerate(zip(names, layers, strict=True)):
            with _located(names, layers, i, None, spec):
                out, child_params, child_state = child.init(child_key(key, i), inputs[i], context=context)
            specs.append(out)
            _collect(params, child_name, child_params)
            _collect(state, child_name, child_state)
        return _join_output(specs, keys), params, state

    def apply(params: Params, state: State, x: Any, *, key: Key | None = None, train: bool = False,
              context: Context | None = None) -> tuple[Any, State]:
        inputs = _split_input(x, len(layers), keys, "inputs")
        _check_children_keys(params, names, "params")
        _check_children_keys(state, names, "state")
        outputs, new_state = [], {}
        for i, (child_name, child) in enumerate(zip(names, layers, strict=True)):
            with _located(names, layers, i, None, x):
                y, child_state = child.apply(params.get(child_name, {}), state.get(child_name, {}), inputs[i],
                                             key=child_key(key, i), train=train, context=context)
            outputs.append(y)
            _collect(new_state, child_name, child_state)
        return _join_output(outputs, keys), new_state

    config = {} if keys is None else {"keys": keys}
    return Layer(init, apply, "Parallel", config, layers, name, children_penalty(layers, names))


def branch(*layers: Layer, name: str | None = None) -> Layer:
    """Applies every layer to the same input: ``x -> (f_0(x), ..., f_n(x))``.

    Equivalent to ``serial(FanOut(n), parallel(*layers))`` with flatter parameter names;
    ``branch({"a": f, "b": g})`` gives ``{"a": f(x), "b": g(x)}``, names as in :func:`parallel`.

    Returns:
        A Layer giving a tuple of n outputs (or a dict). Params and state: ``{child_name: child_params}``.
    """
    layers, keys = _keyed_children(layers, "branch")
    inner = parallel(dict(zip(keys, layers, strict=True))) if keys is not None else parallel(*layers)

    def copies(x: Any) -> Any:
        return (x,) * len(layers) if keys is None else {k: x for k in keys}

    def init(key: Key, input_spec: Spec, *, context: Context | None = None) -> tuple[Spec, Params, State]:
        return inner.init(key, copies(as_spec(input_spec)), context=context)

    def apply(params: Params, state: State, x: Any, *, key: Key | None = None, train: bool = False,
              context: Context | None = None) -> tuple[Any, State]:
        return inner.apply(params, state, copies(x), key=key, train=train, context=context)

    config = {} if keys is None else {"keys": keys}
    return Layer(init, apply, "Branch", config, layers, name, inner.penalty)


def _leaf_name(path: Any) -> str:
    return "output" + jax.tree_util.keystr(path) if path else "output"


def _check_leafwise_sum(first: Any, second: Any, first_what: str, second_what: str, hint: str | None) -> None:
    """Raises ShapeError unless two pytrees (specs or arrays) have one structure and, leaf by leaf,
    one shape past the batch axis."""
    first_tree, second_tree = jax.tree.structure(first), jax.tree.structure(second)
    if first_tree != second_tree:
        raise ShapeError(f"{first_what} {format_spec(first)} and {second_what} {format_spec(second)} have "
                         "different structures and cannot be added.", hint=hint)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(first), jax.tree.leaves(second), strict=True):
        if tuple(a.shape[1:]) != tuple(b.shape[1:]):
            where = f" at {_leaf_name(path)}" if path else ""
            raise ShapeError(f"{first_what}{where} {format_shape(tuple(a.shape))} cannot be added to "
                             f"{second_what}'s {format_shape(tuple(b.shape))}.", hint=hint)


def residual(*layers: Layer, shortcut: Layer | None = None, name: str | None = None) -> Layer:
    """A residual block: ``x -> body(x) + shortcut(x)``, with ``body = serial(*layers)``.

    The sum is leaf by leaf when the body gives a pytree: body and shortcut must give the same
    structure, with the same shapes past the batch axis leaf by leaf.

    Args:
        *layers: the body, applied in order.
        shortcut: applied to ``x`` on the skip path (a 1x1 Conv to change channels, say);
            the identity when omitted.
        name: this layer's name in an enclosing model.

    Returns:
        A Layer whose output spec is the body's, which must match the shortcut's. Params and
        state: the body's entries (named as in :func:`serial`) plus ``"shortcut"`` if given.
    """
    layers = _children(layers)
    body = serial(*layers)
    shortcut_layers = (shortcut._replace(name="shortcut"),) if shortcut is not None else ()
    names = child_names(layers + shortcut_layers)
    shortcut_index = len(layers)
    hint = "give residual a `shortcut=` layer that maps the input to the body's output shape."

    def init(key: Key, input_spec: Spec, *, context: Context | None = None) -> tuple[Spec, Params, State]:
        skip_spec = model_input = as_spec(input_spec)
        out_spec, params, state = body.init(key, model_input, context=context)
        if shortcut is not None:
            with _located(names, layers + shortcut_layers, shortcut_index, None, model_input):
                skip_spec, skip_params, skip_state = shortcut.init(child_key(key, shortcut_index), model_input,
                                                                   context=context)
            _collect(params, "shortcut", skip_params)
            _collect(state, "shortcut", skip_state)
        _check_leafwise_sum(out_spec, skip_spec, "the body's output", "the shortcut", hint)
        return out_spec, params, state

    def apply(params: Params, state: State, x: Any, *, key: Key | None = None, train: bool = False,
              context: Context | None = None) -> tuple[Any, State]:
        _check_children_keys(params, names, "params")
        _check_children_keys(state, names, "state")
        body_params = {k: v for k, v in params.items() if k != "shortcut"}
        body_state = {k: v for k, v in state.items() if k != "shortcut"}
        y, new_state = body.apply(body_params, body_state, x, key=key, train=train, context=context)
        skip = x
        if shortcut is not None:
            with _located(names, layers + shortcut_layers, shortcut_index, None, x):
                skip, skip_state = shortcut.apply(params.get("shortcut", {}), state.get("shortcut", {}), x,
                                                  key=child_key(key, shortcut_index), train=train,
                                                  context=context)
            _collect(new_state, "shortcut", skip_state)
        _check_leafwise_sum(y, skip, "the body's output", "the shortcut", hint)
        return jax.tree.map(lambda a, b: a + b.astype(a.dtype), y, skip), new_state

    return Layer(init, apply, "Residual", {"shortcut": shortcut is not None}, layers + shortcut_layers, name,
                 children_penalty(layers + shortcut_layers, names))


def named(name: str, layer: Layer) -> Layer:
    """Gives ``layer`` a name: its key in the enclosing container's params and state."""
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"named: `name` must be a non-empty string without '/', got {name!r}.")
    return layer._replace(name=name)
