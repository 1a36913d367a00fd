"""Where arrays live on a ``jax.sharding.Mesh``: batches split over a data axis, parameters replicated or FSDP.

::

    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    batch = fn.sharding.shard_batch((x, y), mesh)              # rows split over the "data" axis
    params = fn.sharding.place(params, fn.sharding.param_shardings(params, mesh, param_sharding="fsdp"))

Every sharding here is a ``NamedSharding`` on the mesh's *Auto* version (the same devices and axis
names, with ``jax.sharding.AxisType.Auto``): funcnet annotates where the inputs and outputs of its
compiled functions live and lets XLA partition everything in between, whatever axis types the mesh
was made with (``jax.make_mesh`` makes *Explicit* axes, whose sharding-in-types rules reject some of
the gathers and reshapes funcnet's loops use).

A batch is split along its first axis over ``data_axis``; its size must divide by that axis's size
(:func:`check_divisible`). Parameters (and the optimizer state, and layer state) are replicated by
default; ``param_sharding="fsdp"`` splits each array's largest axis that divides by the data axis's
size over the data axis, and replicates the rest (:func:`param_shardings`).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

__all__ = ["PARAM_SHARDINGS", "check_divisible", "data_axis_size", "data_sharding", "fsdp_spec", "param_shardings",
           "place", "replicated", "shard_batch"]

#: The values ``param_sharding`` takes: None (the same as ``"replicated"``) or ``"fsdp"``.
PARAM_SHARDINGS = (None, "replicated", "fsdp")


def auto_mesh(mesh: Mesh) -> Mesh:
    """``mesh`` with every axis of type Auto (XLA propagates shardings between annotations)."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"`mesh` must be a jax.sharding.Mesh (for example jax.make_mesh((4,), ('data',))), got "
                        f"{type(mesh).__name__}.")
    if mesh.are_all_axes_auto:
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def data_axis_size(mesh: Mesh, data_axis: str = "data") -> int:
    """The number of devices the data axis spans (the batch is split into this many parts)."""
    if data_axis not in mesh.axis_names:
        raise ValueError(f"data_axis={data_axis!r} is not an axis of the mesh, whose axes are {mesh.axis_names}; "
                         "pass data_axis= one of them.")
    return int(mesh.shape[data_axis])


def data_sharding(mesh: Mesh, data_axis: str = "data") -> NamedSharding:
    """The sharding of a batch: the leading (batch) axis split over ``data_axis``, the other axes replicated."""
    data_axis_size(mesh, data_axis)
    return NamedSharding(auto_mesh(mesh), PartitionSpec(data_axis))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of an array every device holds in full."""
    return NamedSharding(auto_mesh(mesh), PartitionSpec())


def fsdp_spec(shape: tuple[int, ...], data_axis: str, size: int) -> PartitionSpec:
    """FSDP's rule: the largest axis of ``shape`` that divides by ``size`` (the first of equals) split over
    ``data_axis``; ``PartitionSpec()`` (replicated) for scalars, ``size == 1`` and shapes with no such axis."""
    candidates = [(-d, i) for i, d in enumerate(shape) if d % size == 0 and d > 0]
    if not candidates or size == 1:
        return PartitionSpec()
    axis = min(candidates)[1]
    return PartitionSpec(*(data_axis if i == axis else None for i in range(len(shape))))


def param_shardings(tree: Any, mesh: Mesh, data_axis: str = "data", param_sharding: str | None = None) -> Any:
    """A ``NamedSharding`` for every array of ``tree`` (params, layer state or optimizer state).

    Args:
        tree: a pytree of arrays (or ``jax.ShapeDtypeStruct``).
        mesh: the device mesh.
        data_axis: the mesh axis batches are split over (FSDP splits parameters over it too).
        param_sharding: None or ``"replicated"``: every array on every device; ``"fsdp"``: each
            array's largest axis whose size divides by the data axis's size is split over it (the
            first such axis among equals), the other axes replicated; scalars and arrays with no
            such axis are replicated.

    Returns:
        A pytree of the structure of ``tree`` with a ``NamedSharding`` per leaf.
    """
    if param_sharding not in PARAM_SHARDINGS:
        raise ValueError(f"param_sharding must be one of {list(PARAM_SHARDINGS)}, got {param_sharding!r}.")
    size = data_axis_size(mesh, data_axis)
    mesh = auto_mesh(mesh)
    if param_sharding == "fsdp":
        return jax.tree.map(lambda a: NamedSharding(mesh, fsdp_spec(tuple(np.shape(a)), data_axis, size)), tree)
    return jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), tree)


def check_divisible(rows: int, mesh: Mesh, data_axis: str = "data", what: str = "the batch") -> None:
    """Raises ValueError unless ``rows`` (a global batch size) divides by the data axis's size."""
    size = data_axis_size(mesh, data_axis)
    if rows % size:
        lower, upper = rows // size * size, -(-rows // size) * size
        fix = f"{lower} or {upper}" if lower else f"{upper}"
        raise ValueError(f"{what} has {rows} examples, which do not divide evenly over the {size} devices of mesh "
                         f"axis {data_axis!r}; use a batch size that is a multiple of {size} (for example {fix}).")


def shard_batch(tree: Any, mesh: Mesh, data_axis: str = "data") -> Any:
    """Global arrays with the rows of ``tree`` split over ``data_axis`` (see :func:`data_sharding`).

    Each device receives only its own rows (``jax.device_put`` to the sharding copies shard by
    shard; nothing is first copied whole to one device). With several processes
    (``jax.process_count() > 1``), each process passes *its own* rows of the global batch (the
    processes' parts in process order) and gets the global array
    (``jax.make_array_from_process_local_data``).

    Args:
        tree: a pytree of NumPy or JAX arrays with the examples on the first axis (None leaves stay None).
        mesh: the device mesh.
        data_axis: the mesh axis to split the rows over.

    Returns:
        The same pytree of ``jax.Array``, each of global shape ``(global_rows, ...)``.

    Raises:
        ValueError: the global row count does not divide by the data axis's size.
    """
    sharding = data_sharding(mesh, data_axis)
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return tree
    if all(isinstance(a, jax.Array) and a.sharding.is_equivalent_to(sharding, a.ndim) for a in leaves):
        return tree  # already global arrays from an earlier shard_batch: nothing to place
    processes = jax.process_count()
    rows = int(np.shape(leaves[0])[0]) * processes
    check_divisible(rows, mesh, data_axis)
    if processes == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree)


def place(tree: Any, shardings: Any) -> Any:
    """``tree``'s arrays placed with ``shardings`` (a pytree of shardings, or a prefix of ``tree``'s structure).

    Each device receives its own shard (``jax.device_put``); arrays that already have their
    sharding are returned as they are. In a multi-process run this places trees that every
    process holds in full (replicated values, or the parameters each process initialised from the
    same key).
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    return jax.tree.map(lambda sharding, part: jax.tree.map(lambda a: _place_from_full_copy(a, sharding), part),
                        shardings, tree)


def _place_from_full_copy(array: Any, sharding: NamedSharding) -> jax.Array:
    """A global array from a value this process holds in full: each device takes its slice of it."""
    if isinstance(array, jax.Array) and array.sharding == sharding:
        return array
    if isinstance(array, jax.Array) and jax.dtypes.issubdtype(array.dtype, jax.dtypes.prng_key):
        impl = jax.random.key_impl(array)  # a typed key: its key data placed, then wrapped again
        return jax.random.wrap_key_data(_place_from_full_copy(jax.random.key_data(array), sharding), impl=impl)
    value = np.asarray(array)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
