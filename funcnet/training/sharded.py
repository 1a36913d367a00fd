"""Compiled functions for a device mesh: ``jax.jit`` with the shardings of their inputs and outputs.

A function's positional arguments each have a *role*:

* ``"params"``: parameters, layer state, optimizer state, running metrics (or a carry of them):
  placed by :func:`funcnet.sharding.param_shardings` (replicated, or FSDP);
* ``"batch"``: examples, split along their first axis over the data axis
  (:func:`funcnet.sharding.shard_batch`);
* ``"replicated"``: keys, indices, counters: on every device.

:class:`ShardedJit` places the arguments by role (arrays already placed are not copied), and
compiles ``fn`` once per argument layout with those ``in_shardings`` and matching
``out_shardings``, so that the outputs come back where the next call's inputs go (no second
compilation, and donated buffers are reused). XLA partitions everything in between: nothing here
writes a collective.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from funcnet.sharding import (
    PARAM_SHARDINGS,
    auto_mesh,
    data_axis_size,
    data_sharding,
    param_shardings,
    place,
    replicated,
    shard_batch,
)

__all__ = ["Layout", "ShardedJit", "jit_on", "make_layout"]

ROLES = ("params", "batch", "replicated")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the arrays of a mesh run live: the mesh, the axis batches are split over, the parameter sharding."""

    mesh: Mesh
    data_axis: str = "data"
    param_sharding: str | None = None

    @property
    def size(self) -> int:
        """Devices along the data axis: a batch is split into this many parts."""
        return data_axis_size(self.mesh, self.data_axis)

    def sharding_of(self, role: str, value: Any) -> Any:
        """The shardings (a pytree, or a prefix of ``value``'s structure) of an argument with ``role``."""
        if role == "batch":
            return data_sharding(self.mesh, self.data_axis)
        if role == "params" and self.param_sharding == "fsdp":
            return param_shardings(value, self.mesh, self.data_axis, "fsdp")
        return replicated(self.mesh)

    def put(self, role: str, value: Any, sharding: Any) -> Any:
        """``value`` placed with ``sharding`` (batches from their rows, see :func:`funcnet.sharding.shard_batch`)."""
        if role == "batch":
            return shard_batch(value, self.mesh, self.data_axis)
        return place(value, sharding)

    def put_resident(self, tree: Any) -> Any:
        """Data kept on the devices for a whole run: its rows split over the data axis (each device holds
        about 1/N of them), padded to a multiple of N with repeats of the first rows, which no batch
        order draws (its indices stay below the true row count)."""
        sharding = data_sharding(self.mesh, self.data_axis)
        return jax.tree.map(lambda a: _rows_on_devices(a, sharding, self.size), tree)

    def constrain_batch(self, batch: Any) -> Any:
        """Inside a compiled function: ``batch`` split over the data axis (so each device computes its part)."""
        return jax.lax.with_sharding_constraint(batch, data_sharding(self.mesh, self.data_axis))


def _rows_on_devices(array: Any, sharding: NamedSharding, size: int) -> jax.Array:
    """``array`` split by rows with ``sharding``, padded to a multiple of ``size`` rows; each device
    receives only its own rows (slices of the host array, not a padded copy of all of it)."""
    n = array.shape[0]
    if n % size == 0:
        return jax.device_put(array, sharding)
    host = np.asarray(array)
    shape = (-(-n // size) * size,) + host.shape[1:]

    def rows(index: tuple) -> np.ndarray:
        wanted = np.arange(shape[0])[index[0]]
        return host[wanted % n] if wanted[-1] >= n else host[wanted[0]:wanted[-1] + 1]

    return jax.make_array_from_callback(shape, sharding, rows)


def make_layout(mesh: Mesh | None, data_axis: str = "data", param_sharding: str | None = None) -> Layout | None:
    """The :class:`Layout` of the keywords ``mesh=``, ``data_axis=``, ``param_sharding=`` (None without a mesh)."""
    if param_sharding not in PARAM_SHARDINGS:
        raise ValueError(f"`param_sharding` must be one of {list(PARAM_SHARDINGS)}, got {param_sharding!r}.")
    if mesh is None:
        if param_sharding == "fsdp":
            raise ValueError("param_sharding='fsdp' splits parameters over a mesh's data axis, but mesh is None; pass "
                             "mesh=jax.make_mesh((jax.device_count(),), ('data',)).")
        return None
    mesh = auto_mesh(mesh)
    data_axis_size(mesh, data_axis)
    return Layout(mesh, data_axis, param_sharding)


@dataclasses.dataclass(frozen=True, eq=False)
class ShardedJit:
    """``fn`` compiled for a :class:`Layout`: call it like ``jax.jit(fn)``; ``lower`` as on a jitted function.

    Attributes:
        fn: the function to compile.
        layout: where its arrays live.
        roles: one role per positional argument (``"params"``, ``"batch"`` or ``"replicated"``).
        out: where the outputs go: an int ``i`` (as argument ``i``), a role (for the whole
            output), or a tuple of those for a tuple output.
        donate_argnums: the arguments whose buffers the outputs reuse.
    """

    fn: Callable
    layout: Layout
    roles: tuple[str, ...]
    out: Any
    donate_argnums: tuple[int, ...] = ()
    _jits: dict = dataclasses.field(default_factory=dict)

    def place(self, *args: Any) -> tuple[tuple, tuple]:
        """``(placed arguments, their shardings)``: each argument placed by its role."""
        if len(args) != len(self.roles):
            raise TypeError(f"{getattr(self.fn, '__name__', 'this function')} takes {len(self.roles)} arguments, got "
                            f"{len(args)}.")
        shardings = tuple(self.layout.sharding_of(role, a) for role, a in zip(self.roles, args, strict=True))
        placed = tuple(self.layout.put(role, a, s) for role, a, s in zip(self.roles, args, shardings, strict=True))
        return placed, shardings

    def jitted(self, shardings: tuple) -> Any:
        """The ``jax.jit`` of ``fn`` for arguments with these shardings (built once per layout)."""
        leaves, treedef = jax.tree.flatten(shardings)
        key = (treedef, tuple(leaves))
        if key not in self._jits:
            self._jits[key] = jax.jit(self.fn, in_shardings=shardings, out_shardings=self._out_shardings(shardings),
                                      donate_argnums=self.donate_argnums)
        return self._jits[key]

    def _out_shardings(self, shardings: tuple) -> Any:
        def one(spec: Any) -> Any:
            return shardings[spec] if isinstance(spec, int) else self.layout.sharding_of(spec, None)

        return tuple(one(s) for s in self.out) if isinstance(self.out, tuple) else one(self.out)

    def __call__(self, *args: Any) -> Any:
        placed, shardings = self.place(*args)
        return self.jitted(shardings)(*placed)

    def lower(self, *args: Any) -> Any:
        """``jax.jit(...).lower`` for these arguments (``.compile().as_text()`` shows the partitioned program)."""
        placed, shardings = self.place(*args)
        return self.jitted(shardings).lower(*placed)

    def _cache_size(self) -> int:
        """Compilations so far, over every argument layout (as ``_cache_size`` of a jitted function)."""
        return sum(j._cache_size() for j in self._jits.values())


def jit_on(layout: Layout | None, fn: Callable, roles: tuple[str, ...], out: Any,
           donate_argnums: tuple[int, ...] | int = ()) -> Callable:
    """``jax.jit(fn, donate_argnums=...)`` without a layout, else a :class:`ShardedJit` (see its attributes)."""
    donate = (donate_argnums,) if isinstance(donate_argnums, int) else tuple(donate_argnums)
    if layout is None:
        return jax.jit(fn, donate_argnums=donate)
    return ShardedJit(fn, layout, tuple(roles), out, donate)
