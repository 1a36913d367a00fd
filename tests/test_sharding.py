"""funcnet.sharding on this process's one device: the FSDP rule, errors, placement (more devices: test_many_devices)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec

import funcnet as fn
from funcnet.sharding import check_divisible, data_sharding, fsdp_spec, param_shardings, place, replicated, shard_batch


@pytest.fixture
def mesh():
    return jax.make_mesh((1,), ("data",))


@pytest.mark.parametrize(("shape", "size", "expected"), [
    ((784, 128), 4, PartitionSpec("data", None)),   # the largest divisible axis
    ((10, 128), 4, PartitionSpec(None, "data")),    # 10 does not divide by 4
    ((64, 64), 4, PartitionSpec("data", None)),     # ties: the first
    ((3, 3, 1, 32), 2, PartitionSpec(None, None, None, "data")),
    ((10,), 4, PartitionSpec()),                    # nothing divides: replicated
    ((), 4, PartitionSpec()),                       # scalars (counts) replicated
    ((128,), 1, PartitionSpec()),                   # one device: nothing to split
])
def test_fsdp_rule(shape, size, expected):
    assert fsdp_spec(shape, "data", size) == expected


def test_shardings_are_on_the_auto_mesh_and_param_shardings_keeps_the_structure(mesh):
    explicit = jax.make_mesh((1,), ("data",), axis_types=(AxisType.Explicit,))
    assert data_sharding(explicit).mesh.are_all_axes_auto
    assert data_sharding(mesh).spec == PartitionSpec("data")
    assert replicated(mesh).is_fully_replicated
    tree = {"w": np.zeros((4, 2)), "b": np.zeros(2), "count": np.zeros((), np.int32)}
    shardings = param_shardings(tree, mesh, param_sharding="fsdp")
    assert jax.tree.structure(shardings) == jax.tree.structure(tree)
    assert all(s.is_fully_replicated for s in jax.tree.leaves(shardings))  # one device


def test_placement(mesh):
    x = np.arange(12.0).reshape(6, 2)
    batch = shard_batch({"x": x, "y": np.arange(6)}, mesh)
    assert batch["x"].sharding == data_sharding(mesh)
    np.testing.assert_array_equal(batch["x"], x)
    placed = place({"w": x}, {"w": replicated(mesh)})
    assert placed["w"].sharding == replicated(mesh)
    assert place(placed, replicated(mesh))["w"] is placed["w"]  # already placed: not copied


def test_errors_name_the_sizes_and_the_fix(mesh):
    with pytest.raises(ValueError, match=r"data_axis='batch' is not an axis of the mesh, whose axes are \('data',\)"):
        data_sharding(mesh, "batch")
    with pytest.raises(ValueError, match=r"param_sharding must be one of \[None, 'replicated', 'fsdp'\], got 'zero3'"):
        param_shardings({}, mesh, param_sharding="zero3")
    with pytest.raises(TypeError, match=r"`mesh` must be a jax.sharding.Mesh .* got list"):
        replicated([0])
    four = jax.sharding.AbstractMesh((4,), ("data",))  # the check needs only the axis sizes
    with pytest.raises(ValueError, match=r"the batch has 30 examples, which do not divide evenly over the 4 devices of "
                                         r"mesh axis 'data'; use a batch size that is a multiple of 4 \(for example "
                                         r"28 or 32\)"):
        check_divisible(30, four)


def test_step_keywords_need_a_mesh_and_jit(mesh):
    model = fn.serial(fn.Dense(2))
    with pytest.raises(ValueError, match="param_sharding='fsdp' splits parameters over a mesh's data axis, but mesh "
                                         "is None"):
        fn.make_train_step(model, "mse", "sgd", param_sharding="fsdp")
    with pytest.raises(ValueError, match="mesh= shards the jitted step; with jit=False"):
        fn.make_eval_step(model, "mse", mesh=mesh, jit=False)
