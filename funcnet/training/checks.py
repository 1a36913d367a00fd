"""Checks on the data at the host boundary, in NumPy, before anything is traced or compiled.

Shapes and dtypes are also checked when a loss is traced, but label *values* (class indices
outside ``[0, C)``) can only be seen here: inside ``jit`` an index of C gives a NaN loss and -1
wraps round to the last class. Each check raises a ``ValueError`` or ``TypeError`` that states
what was expected, what was found and what to do.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from funcnet.core import format_shape

__all__ = ["check_labels", "num_examples"]


def num_examples(x: Any, what: str = "x") -> int:
    """The number of examples in ``x`` (an array or a pytree of arrays with one leading size).

    Raises:
        TypeError: if ``x`` holds no arrays.
        ValueError: if ``x`` is empty or its arrays disagree on the number of examples.
    """
    leaves = jax.tree.leaves(x)
    if not leaves:
        raise TypeError(f"`{what}` must be an array (or a tuple/dict of arrays), got {type(x).__name__}.")
    sizes = []
    for leaf in leaves:
        shape = np.shape(leaf)
        if not shape:
            raise ValueError(f"`{what}` must have a leading batch axis (one row per example), got a scalar.")
        sizes.append(shape[0])
    if len(set(sizes)) > 1:
        raise ValueError(f"the arrays in `{what}` have different numbers of examples: {sizes}.")
    if sizes[0] == 0:
        raise ValueError(f"`{what}` is empty (0 examples); there is nothing to train on or evaluate.")
    return sizes[0]


def check_lengths(x: Any, y: Any, sample_weight: Any = None, *, what: str = "") -> int:
    """Checks that ``x``, ``y`` (and ``sample_weight``) have the same number of examples; returns it.

    Raises:
        ValueError: ``y`` is None (every loss and metric needs labels), or the numbers differ.
    """
    n = num_examples(x, f"{what}x")
    if y is None:
        raise ValueError(f"`{what}y` is None, but the loss and metrics compare the model's outputs with labels: "
                         f"pass one label (or target) per example of `{what}x`, {n} in all.")
    for name, value in ((f"{what}y", y), (f"{what}sample_weight", sample_weight)):
        if value is None:
            continue
        m = num_examples(value, name)
        if m != n:
            raise ValueError(f"`{what}x` has {n} examples but `{name}` has {m}; their first axes must match "
                             "(one label per example).")
    if sample_weight is not None and np.ndim(sample_weight) != 1:
        raise ValueError(f"`{what}sample_weight` must have shape ({n},), one weight per example, got "
                         f"{format_shape(np.shape(sample_weight))}.")
    return n


def check_labels(y: Any, output_shape: tuple[int, ...], kind: str | None, *, loss_name: str = "the loss") -> None:
    """Checks labels against the model's output shape and the kind of labels the loss expects.

    Args:
        y: the labels, a NumPy (or JAX) array with the examples on the first axis.
        output_shape: the model's output shape, batch axis included (its size is ignored).
        kind: what the loss expects (:func:`funcnet.losses.label_kind`): ``"class_index"``,
            ``"distribution"``, ``"binary"``, ``"real"``, or None to check nothing.
        loss_name: the loss's name, for the messages.

    Raises:
        TypeError: float labels where class indices are expected.
        ValueError: a shape that does not fit the output (``(N, 1)`` where ``(N,)`` is meant),
            or class indices outside ``[0, C)``, or binary targets outside ``[0, 1]``.
    """
    if kind is None or not hasattr(y, "shape"):
        return
    y = np.asarray(y)
    n, out = y.shape[0], tuple(output_shape[1:])
    got = format_shape((n,) + y.shape[1:])
    if kind == "class_index":
        if not out:
            raise ValueError(f"{loss_name} needs model outputs of shape (N, C), one score per class, got "
                             f"{format_shape((n,))}.")
        expected = (n,) + out[:-1]
        num_classes = out[-1]
        # Shape first: one-hot float rows would otherwise get the dtype advice, which cannot fix them.
        if y.shape != expected:
            hint = " Flatten them with y.reshape(-1)." if y.shape == expected + (1,) else ""
            if y.shape == (n,) + out:
                hint = " These look like one-hot rows: use loss='categorical_crossentropy' or y.argmax(-1)."
            raise ValueError(f"{loss_name} expects labels of shape {format_shape(expected)} (one class index per "
                             f"example) for model outputs of shape {format_shape((n,) + out)}, got {got}.{hint}")
        if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
            whole = np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)
            fix = ("they are whole numbers: convert them with y.astype('int32')" if whole else
                   "one-hot rows or probabilities need loss='categorical_crossentropy'")
            raise TypeError(f"{loss_name} expects integer class indices, got labels of dtype {y.dtype}; {fix}.")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"{loss_name}: labels must be class indices in [0, {num_classes}) (the model outputs "
                f"{num_classes} classes), got min {low}, max {high}. Give the last layer as many units as there "
                "are classes, or remap the labels to 0..C-1."
            )
    elif kind == "distribution":
        if y.shape[1:] != out:
            hint = (" These look like class indices: use loss='sparse_categorical_crossentropy'."
                    if y.shape[1:] == out[:-1] else "")
            raise ValueError(f"{loss_name} expects one-hot (or probability) rows of shape "
                             f"{format_shape((n,) + out)}, the model's output, got {got}.{hint}")
    elif kind in ("binary", "real"):
        if not (y.shape[1:] == out or y.shape[1:] + (1,) == out or y.shape[1:] == out + (1,)):
            raise ValueError(f"{loss_name} expects targets of the model's output shape {format_shape((n,) + out)}"
                             f" (a trailing axis of size 1 may be left out), got {got}.")
        if kind == "binary" and y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError(
                f"{loss_name} expects targets in [0, 1], got min {y.min()}, max {y.max()}. For more than two "
                "classes use loss='sparse_categorical_crossentropy' with one output unit per class."
            )
