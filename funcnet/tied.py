"""Shared weights: one parameter array used in several places of a model (tied embeddings).

``tied(model, ties)`` wraps ``model``. Each tie names a *destination* parameter of ``model`` and
the *source* parameter it is made from, both as paths into ``model``'s params
(``"dense_0/w"``), with a transform: ``"identity"`` or ``"transpose"``. ``init`` drops the
destinations, so params hold each shared array once: optimizers, checkpoints, export and weight
import all see one array. ``apply`` puts the destinations back, made from their sources, before
running ``model``, so ``jax.grad`` sums the gradients of every use of a source by itself.

A language model whose output projection is its input embedding, transposed::

    lm = fn.serial(fn.Embedding(vocab, d), ..., fn.Dense(vocab, rank=3))
    model = fn.tied(lm, {"dense_0/w": ("embedding_0/w", "transpose")})
    _, params, state = model.init(key, (None, 16))   # "dense_0" holds only its bias "b"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp

from funcnet.core import Array, Key, Layer, Params, ParamsError, ShapeError, State

__all__ = ["TRANSFORMS", "tied"]

#: The transforms a tie can apply to its source: ``"transpose"`` reverses the axes (``source.T``).
TRANSFORMS = ("identity", "transpose")

_FROM_THIS_INIT = "pass params made by this tied model's init (they hold each shared array once)."


def _normalize(ties: Any) -> dict[str, tuple[str, str]]:
    """``{destination: (source, transform)}`` from the accepted spellings; rejects malformed ties."""
    if not isinstance(ties, Mapping):
        raise TypeError(f"tied: `ties` must be a dict {{destination path: source}}, got {type(ties).__name__}.")
    normal = {}
    for destination, value in ties.items():
        source, transform = None, None
        if isinstance(value, str):
            source, transform = value, "identity"
        elif isinstance(value, Sequence) and len(value) == 2:
            source, transform = value
        if not (isinstance(destination, str) and destination and isinstance(source, str) and source):
            raise TypeError(f"tied: tie {destination!r}: {value!r} must map a path string to a source path, or to a "
                            "pair (source path, transform), as in {'dense_0/w': ('embedding_0/w', 'transpose')}.")
        if transform not in TRANSFORMS:
            raise ValueError(f"tied: tie '{destination}' has transform {transform!r}; "
                             f"choose one of {list(TRANSFORMS)}.")
        if destination == source:
            raise ValueError(f"tied: tie '{destination}' is tied onto itself; a tie makes one parameter from another.")
        normal[destination] = (source, transform)
    for destination, (source, _) in normal.items():
        if source in normal:
            raise ValueError(
                f"tied: '{source}' is the destination of a tie and the source of the tie '{destination}'; tie "
                f"'{destination}' to '{normal[source][0]}' (the original) instead."
            )
    return normal


def _lookup(tree: Params, path: str, role: str) -> Array:
    """The array at ``path`` (``"dense_0/w"``) in ``tree``, or a ParamsError saying where the path breaks."""
    node, parts = tree, path.split("/")
    for depth, part in enumerate(parts):
        where = f"'{'/'.join(parts[:depth])}'" if depth else "the model's params"
        if not isinstance(node, Mapping):
            raise ParamsError(f"tie {role} '{path}' names no parameter: {where} is an array, not a group.")
        if part not in node:
            raise ParamsError(f"tie {role} '{path}' names no parameter: no entry '{part}' in {where} "
                              f"(entries: {sorted(node)}).",
                              hint="paths are params keys joined by '/', as in 'dense_0/w'; print the untied "
                              "model's params to see them.")
        node = node[part]
    if isinstance(node, Mapping):
        raise ParamsError(f"tie {role} '{path}' names a group of parameters ({sorted(node)}), not one array.")
    return node


def _holds(tree: Params, path: str) -> bool:
    node = tree
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _without(tree: Params, parts: Sequence[str]) -> Params:
    """A copy of ``tree`` without the entry at ``parts``; groups left empty are dropped, as init drops them."""
    head, *rest = parts
    copy = dict(tree)
    if rest:
        copy[head] = _without(tree[head], rest)
    if not rest or not copy[head]:
        del copy[head]
    return copy


def _with(tree: Params, parts: Sequence[str], value: Array) -> Params:
    """A copy of ``tree`` with ``value`` at ``parts``, making the groups on the way."""
    head, *rest = parts
    return {**tree, head: _with(tree.get(head, {}), rest, value) if rest else value}


def _transformed(array: Array, transform: str) -> Array:
    return jnp.transpose(array) if transform == "transpose" else array


def _check_tie(destination: str, source: str, transform: str, params: Params) -> None:
    """Raises ShapeError unless the transformed source can stand for the destination."""
    target, origin = _lookup(params, destination, "destination"), _lookup(params, source, "source")
    made_shape = tuple(reversed(origin.shape)) if transform == "transpose" else tuple(origin.shape)
    target_shape = tuple(target.shape)
    if made_shape == target_shape and origin.dtype == target.dtype:
        return
    other = "identity" if transform == "transpose" else "transpose"
    if made_shape == target_shape:
        hint = "tie parameters of one dtype."
    elif tuple(reversed(made_shape)) == target_shape:
        hint = f"the transform '{other}' gives {target_shape}."
    else:
        hint = "tie parameters of the same size (for tied embeddings: Dense(vocab_size) fed Embedding's features)."
    raise ShapeError(
        f"tie '{destination}' <- {transform} of '{source}': the destination is {target_shape} {target.dtype}, "
        f"the source gives {made_shape} {origin.dtype}.",
        hint=hint,
    )


def tied(model: Layer, ties: Mapping[str, Any], *, name: str | None = None) -> Layer:
    """Shares parameters inside ``model``: each destination is made from its source at apply.

    Args:
        model: the model whose parameters are shared (any layer with params).
        ties: ``{destination path: source}``, paths into ``model``'s params joined by ``/``;
            ``source`` is a path (the same array) or a pair ``(path, transform)`` with transform
            ``"identity"`` or ``"transpose"`` (axes reversed). Several destinations may share one
            source; a destination cannot be a source, nor tied onto itself.
        name: this layer's name in an enclosing model.

    Returns:
        A Layer of kind ``"Tied"`` whose config, ``{"ties": {destination: (source, transform)}}``,
        lets the architecture JSON rebuild the sharing. ``key``, ``train`` and ``context`` go to
        ``model`` unchanged.

    Shapes:
        ``model``'s input and output, unchanged; so is its state.

    Params:
        ``model``'s params (not nested under its name) without the destinations, and without
        groups left empty: ``{"embedding_0": {"w": (vocab, d)}, "dense_0": {"b": (vocab,)}}``
        for the language model of the module docstring.

    Raises:
        TypeError, ValueError: at construction, for a malformed tie, a tie onto itself or a
            destination that is also a source.
        ParamsError: at init, for a path that names no array of ``model``'s params; at apply, for
            params that hold a destination (untied params) or lack a source.
        ShapeError: at init, when a transformed source's shape or dtype differs from its
            destination's.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"tied: `model` must be a Layer, got {type(model).__name__}.")
    ties = _normalize(ties)

    def init(key: Key, spec: Any, *, context: Any = None) -> tuple[Any, Params, State]:
        out, params, state = model.init(key, spec, context=context)
        for destination, (source, transform) in ties.items():
            _check_tie(destination, source, transform, params)
        for destination in ties:
            params = _without(params, destination.split("/"))
        return out, params, state

    def apply(params: Params, state: State, x: Any, *, key: Key | None = None, train: bool = False,
              context: Any = None) -> tuple[Any, State]:
        return model.apply(_untie(params, ties), state, x, key=key, train=train, context=context)

    def penalty(params: Params) -> Array:
        return model.penalty(_untie(params, ties))

    return Layer(init, apply, "Tied", {"ties": dict(ties)}, (model,), name,
                 None if model.penalty is None else penalty)


def _untie(params: Params, ties: dict[str, tuple[str, str]]) -> Params:
    """The wrapped model's params: each destination put back, made from its source."""
    full = params
    for destination, (source, transform) in ties.items():
        if _holds(params, destination):
            raise ParamsError(f"params hold '{destination}', which this model makes from '{source}'.",
                              hint=_FROM_THIS_INIT)
        if not _holds(params, source):
            raise ParamsError(f"params lack '{source}', the source of the tie '{destination}'.", hint=_FROM_THIS_INIT)
        full = _with(full, destination.split("/"), _transformed(_lookup(params, source, "source"), transform))
    return full
