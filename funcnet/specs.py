"""Specs: what ``init`` takes and gives, a pytree of ``jax.ShapeDtypeStruct`` with the batch axis None.

See :mod:`funcnet.core` for the contract. Plain shape tuples stand for float32 leaves wherever a
spec is taken; :func:`as_spec` does that normalising, :func:`array_spec` the checks of a
single-input layer, :func:`traceable` the substitution of a batch size for ``jax.eval_shape``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.errors import InputTypeError, MissingInputError, ShapeError

Spec = Any
Context = Mapping[str, Any]


def is_shape(value: Any) -> bool:
    """Whether ``value`` is a plain shape: a non-empty tuple or list whose items are all int or None."""
    return (isinstance(value, (tuple, list)) and len(value) > 0
            and all(d is None or (isinstance(d, (int, np.integer)) and not isinstance(d, bool)) for d in value))


def spec(shape: Sequence[int | None], dtype: Any = "float32") -> jax.ShapeDtypeStruct:
    """One spec leaf: an array of ``shape`` (axis 0 the batch, any size) and ``dtype``.

    Args:
        shape: the shape, batch axis included; its batch entry (None, -1 or a size) becomes None.
        dtype: anything ``jnp.dtype`` takes (``"float32"``, ``jnp.int32``, ``bool``).

    Returns:
        ``jax.ShapeDtypeStruct((None, *shape[1:]), dtype)``.
    """
    if not is_shape(shape):
        raise ShapeError(f"a spec's shape must be a non-empty tuple of ints (batch axis first), got {shape!r}.")
    rest = tuple(int(d) if d is not None else None for d in tuple(shape)[1:])
    return jax.ShapeDtypeStruct((None, *rest), jnp.dtype(dtype))


def spec_of(tree: Any) -> Spec:
    """The spec of a pytree of arrays: the same structure, each leaf's shape and dtype, batch None."""
    def leaf(a: Any) -> jax.ShapeDtypeStruct:
        a = a if hasattr(a, "shape") and hasattr(a, "dtype") else np.asarray(a)
        return spec(a.shape, jax.dtypes.canonicalize_dtype(a.dtype))

    return jax.tree.map(leaf, tree)


def _is_leaf_spec(value: Any) -> bool:
    return is_shape(value) or isinstance(value, jax.ShapeDtypeStruct)


def as_spec(tree: Any) -> Spec:
    """Normalises what a user passes as a spec: shapes become float32 leaves, batch axes None.

    ``tree`` is a pytree whose leaves are ``jax.ShapeDtypeStruct`` (or arrays) or plain shapes
    (see :func:`is_shape`; a shape may stand anywhere a leaf can). Every combinator calls it.

    Raises:
        ShapeError: naming the entry (``x['mask']``) that is not a spec.
    """

    def leaf(path: Any, value: Any) -> Any:
        if is_shape(value):
            if len(value) == 1 and value[0] not in (None, -1):
                raise ShapeError(
                    f"the shape {format_shape(tuple(value))} has a single axis, which is the batch axis.",
                    hint=f"shapes start with the batch axis: write (None, {value[0]}) if {value[0]} is the number "
                    "of features.")
            return spec(value)
        if isinstance(value, jax.ShapeDtypeStruct) or hasattr(value, "shape") and hasattr(value, "dtype"):
            if len(value.shape) == 0:
                raise ShapeError(f"input {'x' + jax.tree_util.keystr(path)} is a scalar; every input needs a "
                                 "batch axis first.")
            return spec(value.shape, value.dtype)
        raise ShapeError(
            f"input {'x' + jax.tree_util.keystr(path)} is a {type(value).__name__} ({value!r:.60}), not a spec.",
            hint="describe each input as fn.spec(shape, dtype) or a shape tuple such as (None, 28, 28, 1).",
        )

    return jax.tree_util.tree_map_with_path(leaf, tree, is_leaf=_is_leaf_spec)


def array_spec(spec_tree: Any, *, dtype: Any = None, name: str = "input") -> jax.ShapeDtypeStruct:
    """The one array spec a single-input layer takes, checked.

    Args:
        spec_tree: what the layer's ``init`` got (normalised with :func:`as_spec`).
        dtype: the kind of dtype the layer needs: ``jnp.floating``, ``jnp.integer``, ``jnp.bool_``,
            a tuple of them, or None for any.
        name: the input's name in messages (``"x['mask']"``).

    Raises:
        ShapeError: the spec is a tuple, list or dict of several inputs.
        InputTypeError: the dtype is not of the kind ``dtype`` names.
    """
    leaf = as_spec(spec_tree)
    if not isinstance(leaf, jax.ShapeDtypeStruct):
        raise ShapeError(f"expected one array as {name}, got {describe_inputs(leaf)}: {format_spec(leaf)}.",
                         hint="pick one entry first, or use a combinator (parallel, FanInConcat) that takes "
                         "several inputs.")
    if dtype is not None:
        check_dtype(leaf, dtype, name)
    return leaf


_DTYPE_HINTS = {
    "floating": "convert it first, for example `x.astype('float32') / 255` for 8-bit images.",
    "integer": "pass ids as integers, for example `x.astype('int32')` if they are whole-number floats.",
    "bool": "pass a boolean array, for example `mask > 0`.",
}


def check_dtype(leaf: Any, dtype: Any, name: str = "input") -> None:
    """Raises :class:`InputTypeError` unless ``leaf`` (a spec or array) has a dtype of kind ``dtype``.

    ``dtype`` is ``jnp.floating``, ``jnp.integer``, ``jnp.bool_`` or a tuple of them.
    """
    kinds = dtype if isinstance(dtype, tuple) else (dtype,)
    if any(jnp.issubdtype(leaf.dtype, kind) for kind in kinds):
        return
    wanted = [getattr(kind, "__name__", str(kind)).rstrip("_") for kind in kinds]
    hint = _DTYPE_HINTS.get(wanted[0])
    article = "an" if wanted[0][0] in "aeiou" else "a"
    raise InputTypeError(f"expected {name} of {article} {' or '.join(wanted)} dtype, got {leaf.dtype}.", hint=hint)


def describe_inputs(tree: Any) -> str:
    """``"a tuple of 2 inputs"``, ``"a dict of 3 inputs"``: for messages about structure."""
    count = len(jax.tree.leaves(tree))
    kind = type(tree).__name__ if isinstance(tree, (tuple, list, dict)) else "pytree"
    return f"a {kind} of {count} input{'s' if count != 1 else ''}"


def traceable(spec_tree: Any, batch_size: int = 1) -> Any:
    """The spec with batch axes set to ``batch_size``, for ``jax.eval_shape`` (which rejects None)."""
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct((batch_size, *s.shape[1:]), s.dtype), as_spec(spec_tree))


def format_spec(tree: Any) -> str:
    """A spec (or shape, or arrays) as text: ``(N, 28, 28, 1) float32``, containers as Python shows them."""
    if isinstance(tree, dict):
        return "{" + ", ".join(f"{k!r}: {format_spec(v)}" for k, v in tree.items()) + "}"
    if isinstance(tree, (tuple, list)) and not is_shape(tree):
        inner = ", ".join(format_spec(v) for v in tree) + ("," if isinstance(tree, tuple) and len(tree) == 1 else "")
        return f"({inner})" if isinstance(tree, tuple) else f"[{inner}]"
    if hasattr(tree, "shape") and hasattr(tree, "dtype"):
        return f"{format_shape(tuple(tree.shape))} {jnp.dtype(tree.dtype).name}"
    return format_shape(tree)


def side_input(context: Context | None, name: str, kind: str) -> Any:
    """``context[name]``: a side input (an array at apply, its spec at init) a layer reads.

    Raises:
        MissingInputError: naming the missing side input and those available.
    """
    available = sorted(context) if context else []
    if context is None or name not in context:
        raise MissingInputError(
            f"{kind} reads the side input {name!r}, but the context holds {available or 'none'}.",
            hint=f"wrap the model in fn.with_context(model, {name!r}) and give it a dict input with a "
            f"{name!r} entry.",
        )
    return context[name]


def format_shape(shape: Any) -> str:
    """Formats a shape as ``(N, 28, 28, 1)``, showing a batch size of -1 or None as ``N``."""
    if isinstance(shape, tuple) and shape and all(isinstance(d, (int, str, type(None))) for d in shape):
        dims = ["N" if i == 0 and (d is None or d == -1) else str(d) for i, d in enumerate(shape)]
        return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
    return repr(shape)
