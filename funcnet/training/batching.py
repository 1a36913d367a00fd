"""How ``fit`` orders examples into batches and derives its random keys, all from one ``key``.

The recipe, which a hand-written loop can reproduce exactly::

    data_key, step_root = jax.random.split(key)
    # epoch e (counting from 0) visits the examples in this order:
    order = jax.random.permutation(jax.random.fold_in(data_key, e), n)   # arange(n) if shuffle=False
    # batch b of the epoch holds order[b * batch_size:(b + 1) * batch_size]
    # the optimisation step s (counting every step from 0, across epochs) gets the key
    step_key = jax.random.fold_in(step_root, s)

The last batch, when ``n`` is not a multiple of ``batch_size``, is either dropped
(``ragged="drop"``) or completed with the examples from the start of the epoch's order and
masked with weights 0 (``ragged="pad"``), so every batch has one shape and the step compiles
once. Without a ragged batch, no weights are passed at all.
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.core import Array, Key

__all__ = ["batch_order", "fit_keys", "num_batches", "step_key"]

RAGGED = ("pad", "drop")


def fit_keys(key: Key) -> tuple[Key, Key]:
    """``(data_key, step_root)``: the key that orders the data and the root of the step keys."""
    data_key, step_root = jax.random.split(key)
    return data_key, step_root


def step_key(step_root: Key, step: Any) -> Key:
    """The key of optimisation step ``step`` (counted from 0 over the whole training)."""
    return jax.random.fold_in(step_root, step)


def num_batches(n: int, batch_size: int, ragged: str) -> int:
    """Batches per epoch: ``ceil(n / batch_size)`` with padding, ``n // batch_size`` when dropping."""
    return math.ceil(n / batch_size) if ragged == "pad" else n // batch_size


def batch_order(data_key: Key, epoch: int, n: int, batch_size: int, *, ragged: str = "pad",
                shuffle: bool = True) -> Array:
    """The example indices of every batch of ``epoch``, shape ``(num_batches, batch_size)``.

    Padding rows (past ``n``) repeat the first examples of the epoch's order; give them weight 0.
    """
    return _batch_order(data_key, jnp.int32(epoch), n=n, batch_size=batch_size, ragged=ragged, shuffle=shuffle)


@functools.partial(jax.jit, static_argnames=("n", "batch_size", "ragged", "shuffle"))
def _batch_order(data_key: Key, epoch: Array, *, n: int, batch_size: int, ragged: str, shuffle: bool) -> Array:
    order = jax.random.permutation(jax.random.fold_in(data_key, epoch), n) if shuffle else jnp.arange(n)
    steps = num_batches(n, batch_size, ragged)
    positions = jnp.arange(steps * batch_size) % n
    return order[positions].reshape(steps, batch_size).astype(jnp.int32)


def padding_mask(row: Any, n: int, batch_size: int) -> Array:
    """Weights 1 for the real examples of batch ``row``, 0 for padding (float32, ``(batch_size,)``)."""
    return (row * batch_size + jnp.arange(batch_size) < n).astype(jnp.float32)


def tree_bytes(tree: Any) -> int:
    return sum(leaf.nbytes if hasattr(leaf, "nbytes") else np.asarray(leaf).nbytes for leaf in jax.tree.leaves(tree))


def fits_on_device(tree: Any, fraction: float = 0.5) -> bool:
    """Whether ``tree`` takes less than ``fraction`` of the default device's free memory.

    Backends that report no memory statistics (the CPU) always fit: their "device" is the host.
    """
    stats = jax.devices()[0].memory_stats()
    if not stats or "bytes_limit" not in stats:
        return True
    free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    return tree_bytes(tree) < fraction * free


def gather(tree: Any, indices: Array) -> Any:
    """Rows ``indices`` of every array in ``tree``, on the device (indices are known valid)."""
    return jax.tree.map(lambda a: a.at[indices].get(mode="promise_in_bounds"), tree)


def host_batches(data: tuple, order: np.ndarray, n: int, weights_needed: bool, start: int = 0,
                 prefetch: int = 2, layout: Any = None) -> Iterator[tuple]:
    """Yields device batches ``(x, y, weights or None)`` gathered on the host in ``order``'s rows,
    from row ``start``.

    Copies to the device run ``prefetch`` batches ahead (``jax.device_put`` is asynchronous), so
    the next batch moves while the current step runs. With a ``layout``
    (:class:`funcnet.training.sharded.Layout`), each batch is split over its data axis, each
    device receiving its own rows.
    """
    x, y, sample_weight = data
    batch_size = order.shape[1]

    def make(row: int) -> tuple:
        idx = order[row]
        weights = None
        if weights_needed:
            mask = (row * batch_size + np.arange(batch_size) < n).astype(np.float32)
            weights = mask if sample_weight is None else mask * np.asarray(sample_weight)[idx]
        xb = jax.tree.map(lambda a: np.asarray(a)[idx], x)
        yb = jax.tree.map(lambda a: np.asarray(a)[idx], y)
        return jax.device_put((xb, yb, weights)) if layout is None else layout.put("batch", (xb, yb, weights), None)

    queue: collections.deque = collections.deque()
    for row in range(start, order.shape[0]):
        queue.append(make(row))
        if len(queue) > prefetch:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
