"""Checks of the mesh switch on N devices, run in a fresh process: ``python many_devices_worker.py N [check ...]``.

The process forces N CPU devices (``XLA_FLAGS`` must be set before JAX is imported, so this runs
apart from the test process, which keeps one device) and compares every mesh run with the same
run on one device (``mesh=None``, on device 0). Warnings are errors, as in the suite (a donated
buffer that could not be reused warns). It prints ``ok <check>`` per check and exits non-zero on
the first failure. tests/test_many_devices.py runs it for N = 2 and 4, and its checks inline with
N = 1.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={int(sys.argv[1])}"
    os.environ["JAX_PLATFORMS"] = "cpu"

import functools
import re
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import funcnet as fn
from funcnet.training.loops import Batches, Carry, TrainLoop
from funcnet.training.sharded import ShardedJit, make_layout
from funcnet.training.step import build_program

BATCH = 16  # the global batch: divides by 1, 2 and 4
STEPS = 20
LOSS = "sparse_categorical_crossentropy"
#: Params and losses after 20 steps agree to float32 reassociation within this (relative to the
#: largest value). A gradient scaled by the device count, or a device training on its own shard,
#: moves them by more than 100 * RTOL (check_wrong_versions_break_the_tolerance shows it: 0.23 and 0.25,
#: against 1e-7 for the mesh runs on 2 and 4 devices).
RTOL = 1e-5


def model_with_batchnorm_and_dropout() -> fn.Layer:
    return fn.serial(fn.Flatten(), fn.Dense(16), fn.BatchNorm(), fn.Relu(), fn.Dropout(0.3), fn.Dense(8))


def toy_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4, 3)).astype(np.float32), rng.integers(0, 8, n).astype(np.int32)


def data_mesh() -> jax.sharding.Mesh:
    return jax.make_mesh((jax.device_count(),), ("data",))


def max_relative_difference(a, b) -> float:
    """max |a - b| over every leaf, relative to the largest |b|."""
    diffs = jax.tree.leaves(jax.tree.map(lambda u, v: float(np.max(np.abs(np.asarray(u) - np.asarray(v)))), a, b))
    scale = max(float(np.max(np.abs(np.asarray(v)))) for v in jax.tree.leaves(b))
    return max(diffs) / scale


def train_steps(mesh, *, param_sharding=None, learning_rate=0.1, batch_slice=slice(None)):
    """20 SGD steps of the BatchNorm + Dropout model: ``(losses, params, state, step)``.

    The loss depends on the gradient's scale (SGD, unlike Adam), and on the BatchNorm statistics
    and dropout masks being the global batch's.
    """
    model = model_with_batchnorm_and_dropout()
    _, params, state = model.init(jax.random.key(0), (None, 4, 3))
    step = fn.make_train_step(model, LOSS, "sgd", learning_rate=learning_rate, mesh=mesh,
                              param_sharding=param_sharding)
    opt_state = fn.training.init_opt_state(params, "sgd", learning_rate=learning_rate)
    x, y = toy_data(BATCH * STEPS)
    losses = []
    for i in range(STEPS):
        rows = slice(i * BATCH, (i + 1) * BATCH)
        batch = (x[rows][batch_slice], y[rows][batch_slice])
        donated = params
        params, state, opt_state, logs = step(params, state, opt_state, batch, jax.random.key(i))
        losses.append(logs["loss"])
    assert all(a.is_deleted() for a in jax.tree.leaves(donated)), "the step did not reuse the donated params"
    return np.asarray(losses), params, state, step


@functools.cache
def one_device_run():
    """The reference: :func:`train_steps` without a mesh (computed once per process)."""
    return train_steps(None)


def check_train_step_matches_one_device():
    mesh = data_mesh()
    ref_losses, ref_params, ref_state, _ = one_device_run()
    losses, params, state, step = train_steps(mesh)
    assert max_relative_difference(losses, ref_losses) < RTOL, (losses, ref_losses)
    assert max_relative_difference(params, ref_params) < RTOL
    assert max_relative_difference(state, ref_state) < RTOL  # BatchNorm's running statistics: the global batch's
    assert step._cache_size() == 1, f"compiled {step._cache_size()} times"
    leaf = jax.tree.leaves(params)[0]
    assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == jax.device_count()
    n = jax.device_count()
    if n > 1:
        opt_state = fn.training.init_opt_state(params, "sgd", learning_rate=0.1)
        x, y = toy_data(BATCH + 1)
        try:
            step(params, state, opt_state, (x, y), jax.random.key(0))
        except ValueError as error:
            assert f"has {BATCH + 1} examples, which do not divide evenly over the {n} devices" in str(error), error
        else:
            raise AssertionError("a batch of 17 examples was accepted on a mesh of several devices")


def check_wrong_versions_break_the_tolerance():
    """What a wrong data-parallel step would give is far outside RTOL, so the equality checks can catch it.

    Simulated on one device (it does not depend on N; only the inline run, N = 1, does it).
    """
    if jax.device_count() > 1:
        return
    _, ref_params, _, _ = one_device_run()
    _, scaled, _, _ = train_steps(None, learning_rate=0.1 * 4)  # gradients summed over 4 devices, not averaged
    _, own_shard, _, _ = train_steps(None, batch_slice=slice(0, BATCH // 4))  # no all-reduce: device 0's shard only
    assert max_relative_difference(scaled, ref_params) > 100 * RTOL
    assert max_relative_difference(own_shard, ref_params) > 100 * RTOL


def check_fsdp_shards_params_and_matches():
    mesh = data_mesh()
    n = jax.device_count()
    ref_losses, ref_params, _, _ = one_device_run()
    losses, params, _, step = train_steps(mesh, param_sharding="fsdp")
    assert max_relative_difference(losses, ref_losses) < RTOL
    assert max_relative_difference(params, ref_params) < RTOL
    w = params["dense_0"]["w"]  # (12, 16): the largest axis 16 divides by 1, 2 and 4
    expected = jax.sharding.PartitionSpec(None, "data") if n > 1 else jax.sharding.PartitionSpec()
    assert w.sharding.spec == expected, w.sharding
    assert w.addressable_shards[0].data.shape == (12, 16 // n)
    assert step._cache_size() == 1


def check_compiled_step_is_data_parallel():
    """The partitioned program holds batch/N rows per device: a replicated program would show [16, ...] arrays."""
    n = jax.device_count()
    model = model_with_batchnorm_and_dropout()
    _, params, state = model.init(jax.random.key(0), (None, 4, 3))
    step = fn.make_train_step(model, LOSS, "sgd", learning_rate=0.1, mesh=data_mesh())
    x, y = toy_data(BATCH)
    hlo = step.lower(params, state, fn.training.init_opt_state(params, "sgd", learning_rate=0.1), (x, y),
                     jax.random.key(0)).compile().as_text()
    assert re.search(rf"f32\[{BATCH // n},16\]", hlo), "no per-device hidden activations [batch/N, 16]"
    if n > 1:
        assert not re.search(rf"f32\[{BATCH},16\]", hlo), "the whole batch's activations are computed on a device"
        assert "all-reduce" in hlo


N_FIT = 50  # examples for fit: a ragged last batch (50 = 3 * 16 + 2) and rows that do not divide by 4


def fit_run(mesh, epochs=2, **options):
    """Two epochs of fit (shuffled, SGD, a padded last batch): the FitResult."""
    model = model_with_batchnorm_and_dropout()
    _, params, state = model.init(jax.random.key(0), (None, 4, 3))
    if options.get("resume") is not None:
        params = state = None  # the TrainState holds them
    x, y = toy_data(N_FIT)
    return fn.fit(model, params, state, x, y, loss=LOSS, optimizer="sgd", learning_rate=0.1, epochs=epochs,
                  batch_size=BATCH, metrics=["accuracy"], verbose=0, mesh=mesh, **options)


@functools.cache
def one_device_fit():
    return fit_run(None, mode="scan")


def check_fit_matches_one_device_in_scan_and_host_modes():
    """Scan mode (data resident, split over the devices, batches gathered by the global order) and
    host batches placed shard by shard: the loss history and params of one device."""
    reference = one_device_fit()
    for options in ({"mode": "scan"}, {"mode": "step", "data_on_device": False}):
        result = fit_run(data_mesh(), **options)
        for name in ("loss", "accuracy"):
            assert max_relative_difference(result.history[name], reference.history[name]) < RTOL, (name, options)
        assert max_relative_difference(result.params, reference.params) < RTOL, options
        assert max_relative_difference(result.state, reference.state) < RTOL, options
    compiled = {key[0]: entry._cache_size() for key, entry in fn.training.cache._entries.items()
                if isinstance(entry, ShardedJit)}
    assert compiled and set(compiled.values()) == {1}, f"compiled more than once per function: {compiled}"


def check_fit_resumes_exactly_from_a_sharded_checkpoint():
    """fit with FSDP, checkpointed after epoch 1, restored from disk and resumed: bit-identical to the
    uninterrupted run on the same mesh (params, layer and optimizer state, key, loss history)."""
    import tempfile

    from funcnet import checkpoint as ck

    options = {"mode": "scan", "param_sharding": "fsdp", "key": jax.random.key(5)}
    whole = fit_run(data_mesh(), **options)
    with tempfile.TemporaryDirectory() as directory:
        fit_run(data_mesh(), epochs=1, callbacks=[ck.CheckpointCallback(directory)], **options)
        restored = ck.CheckpointCallback(directory).restore_latest()
        assert (restored.epoch, restored.batch) == (1, 0), (restored.epoch, restored.batch)
        resumed = fit_run(data_mesh(), resume=restored, **{k: v for k, v in options.items() if k != "key"})
    for name, a, b in (("params", resumed.params, whole.params), ("state", resumed.state, whole.state),
                       ("opt_state", resumed.opt_state, whole.opt_state)):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            assert np.array_equal(np.asarray(x), np.asarray(y)), name
    assert resumed.history["loss"] == whole.history["loss"][1:], (resumed.history["loss"], whole.history["loss"])


def check_fit_scan_holds_1_over_n_of_the_data_and_computes_batch_over_n():
    """The compiled epoch loop: each device holds its rows of the data and computes batch/N examples."""
    n = jax.device_count()
    rows = 1000
    layout = make_layout(data_mesh())
    model = model_with_batchnorm_and_dropout()
    _, params, state = model.init(jax.random.key(0), (None, 4, 3))
    program = build_program(model, LOSS, "sgd", learning_rate=0.1)
    loop = TrainLoop(program, Batches(rows, BATCH, masked=False), layout)
    x, y = toy_data(rows)
    data = layout.put_resident((x, y, None))
    assert data[0].addressable_shards[0].data.shape == (rows // n, 4, 3)
    outputs = jax.ShapeDtypeStruct((BATCH, 8), jnp.float32)
    carry = Carry(params, state, program.init_opt_state(params), program.tracker.init(outputs), jnp.int32(0),
                  jnp.int32(0))
    order = fn.training.batch_order(jax.random.key(1), 0, rows, BATCH)
    compiled = loop.scan_on_device().lower(carry, data, order, jax.random.key(2), jnp.int32(3)).compile()
    hlo = compiled.as_text()
    assert re.search(rf"f32\[{BATCH // n},16\]", hlo)
    if n > 1:
        assert not re.search(rf"f32\[{BATCH},16\]", hlo), "the whole batch's activations are computed on a device"
        assert not re.search(rf"f32\[{rows},4,3\]", hlo), "the whole data set is gathered on a device"
        assert compiled.memory_analysis().argument_size_in_bytes < (x.nbytes + y.nbytes) / n + 8 * 1024


def check_uneven_batch_size_is_refused_and_evaluate_predict_match():
    n = jax.device_count()
    mesh = data_mesh()
    reference = one_device_fit()
    model = model_with_batchnorm_and_dropout()
    x, y = toy_data(N_FIT)
    if n > 1:
        try:
            fn.fit(model, reference.params, reference.state, x, y, loss=LOSS, batch_size=BATCH + 2, mesh=mesh)
        except ValueError as error:
            assert f"`batch_size`={BATCH + 2} does not divide evenly over the {n} devices of mesh axis 'data'; use " \
                f"a multiple of {n}" in str(error), error
        else:
            raise AssertionError("fit accepted a batch size that does not divide by the device count")
    args = (model, reference.params, reference.state, x)
    expected = fn.evaluate(*args, y, loss=LOSS, metrics=["accuracy"], batch_size=BATCH)
    got = fn.evaluate(*args, y, loss=LOSS, metrics=["accuracy"], batch_size=BATCH, mesh=mesh)
    assert max_relative_difference(got, expected) < RTOL, (got, expected)
    expected = fn.predict(*args, batch_size=BATCH)
    got = fn.predict(*args, batch_size=BATCH, mesh=mesh, param_sharding="fsdp")
    assert got.shape == (N_FIT, 8)
    assert max_relative_difference(got, expected) < RTOL


CHECKS = {name[len("check_"):]: f for name, f in sorted(globals().items()) if name.startswith("check_")}


def main(names: list[str]) -> None:
    warnings.simplefilter("error")
    for name in names or CHECKS:
        started = time.process_time()
        CHECKS[name]()
        print("ok", name, f"{time.process_time() - started:.1f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[2:])
