"""Scenarios run by tests/test_distributed*.py in several processes (see tests/multiprocess.py).

``python tests/distributed_worker.py <scenario> <directory>``, with the environment set by
``multiprocess.run_workers``. Each scenario reports a JSON result per process.
"""

from __future__ import annotations

import os
import sys
import traceback

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import funcnet as fn
from tests.multiprocess import report, start


def basics(directory: str) -> dict:
    """Who is who, a barrier, and a sum over rows that each process holds its own part of."""
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rows = np.arange(4, dtype=np.float32).reshape(2, 2) + 10 * jax.process_index()  # this process's 2 rows
    batch = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), rows)
    total = jax.jit(lambda x: x.sum(), out_shardings=NamedSharding(mesh, P()))(batch)
    fn.distributed.barrier("basics")
    return {"process_index": jax.process_index(), "process_count": jax.process_count(),
            "primary": fn.distributed.is_primary(), "devices": jax.device_count(),
            "local_devices": jax.local_device_count(), "global_shape": list(batch.shape),
            "total": float(total.addressable_data(0))}


def one_dies(directory: str) -> dict:
    """Process 1 fails before a barrier; process 0 would wait there for it (until the harness kills it)."""
    if jax.process_index() == 1:
        raise SystemExit("process 1 fails on purpose")
    fn.distributed.barrier("never reached by process 1")
    return {}


W = np.arange(32, dtype=np.float32).reshape(8, 4)
B = np.linspace(0, 1, 4, dtype=np.float32)
KEY_SEED = 3


def _global(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def sharded_tree(mesh: Mesh) -> dict:
    """A small training-state-like tree: rows of ``w`` split over the 4 devices, the rest replicated."""
    replicated = NamedSharding(mesh, P())
    key = jax.random.wrap_key_data(_global(np.asarray(jax.random.key_data(jax.random.key(KEY_SEED))), replicated))
    return {"w": _global(W, NamedSharding(mesh, P("data"))), "b": _global(B, replicated), "key": key, "step": 5,
            "host": np.array([1, 2, 3])}


def _parts(array: jax.Array) -> dict:
    """This process's shards of ``array``: ``"start:stop,..." -> values``."""
    parts = {}
    for shard in array.addressable_shards:
        name = ",".join(f"{s.start or 0}:{s.stop if s.stop is not None else n}" for s, n in zip(shard.index,
                                                                                          array.shape, strict=True))
        parts[name] = np.asarray(shard.data).tolist()
    return parts


def checkpoint(directory: str) -> dict:
    """Saves a tree spread over both processes, restores it onto two other layouts, and fails a save on purpose."""
    import errno
    from pathlib import Path

    from funcnet import checkpoint as ck
    from funcnet.checkpoint import format as fmt
    from funcnet.checkpoint import storage

    mesh = Mesh(np.array(jax.devices()), ("data",))
    tree = sharded_tree(mesh)
    path = Path(directory) / "ckpts" / "ckpt"
    ck.save(path, tree, metadata={"step": 5})

    read = []
    original_read_file = fmt.read_file

    def recording_read_file(directory, record, entry):
        read.append(record["file"])
        return original_read_file(directory, record, entry)

    fmt.read_file = recording_read_file
    same = ck.restore(path, like=tree).tree
    read_same, read[:] = sorted(read), []
    columns = {"w": NamedSharding(mesh, P(None, "data")), "b": NamedSharding(mesh, P("data")),
               "key": NamedSharding(mesh, P()), "step": None, "host": None}
    other = ck.restore(path, like=tree, shardings=columns).tree
    read_other = sorted(read)
    fmt.read_file = original_read_file

    # A save in which process 1 cannot write its shards: every process raises, nothing is committed.
    original_write_file = storage.write_file

    def full_disk(path, chunks):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    if jax.process_index() == 1:
        storage.write_file = full_disk
    try:
        ck.save(path, {**tree, "step": 6}, overwrite=True)
        failure = None
    except ck.CheckpointWriteError as error:
        failure = str(error)
    storage.write_file = original_write_file
    fn.distributed.barrier("after the failed save")
    kept = ck.restore(path, like=tree).tree
    agreed = restore_latest_agrees(Path(directory) / "managed", tree)
    return {**agreed, "same_w": _parts(same["w"]), "same_b": _parts(same["b"]), "read_same": read_same,
            "same_key": np.asarray(jax.random.key_data(same["key"]).addressable_data(0)).tolist(),
            "same_step": same["step"], "same_host": same["host"].tolist(),
            "other_w": _parts(other["w"]), "other_b": _parts(other["b"]), "read_other": read_other,
            "other_shardings": [str(other["w"].sharding.spec), str(other["b"].sharding.spec)],
            "failure": failure, "kept_step": kept["step"], "leftovers": sorted(p.name for p in path.parent.iterdir())}


def restore_latest_agrees(directory, tree: dict) -> dict:
    """Steps 1 and 2 saved; then a shard of step 2 that only process 1 reads is corrupted (by process 1).

    Process 0 alone would restore step 2 and process 1 alone step 1: restore_latest must give the
    same answer in both, with and without ``fallback``.
    """
    import json
    import warnings

    from funcnet import checkpoint as ck
    from funcnet.checkpoint import format as fmt

    manager = ck.CheckpointManager(directory, max_to_keep=None)
    for step in (1, 2):
        manager.save(step, {**tree, "step": step})
    if jax.process_index() == 1:
        manifest = json.loads((manager.path(2) / fmt.MANIFEST).read_text())
        shard = {e["path"]: e for e in manifest["arrays"]}["['w']"]["shards"][2]  # rows 4:6, on process 1's devices
        data = bytearray((manager.path(2) / shard["file"]).read_bytes())
        data[5] ^= 1
        (manager.path(2) / shard["file"]).write_bytes(bytes(data))
    fn.distributed.barrier("after the corruption")
    try:
        manager.restore_latest(tree)
        refused = None
    except ck.CheckpointCorruptError as error:
        refused = str(error)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallen_back = manager.restore_latest(tree, fallback=True).tree["step"]
    return {"latest_refused": refused, "latest_fallback": fallen_back, "latest_warnings": [str(w.message)
                                                                                          for w in caught]}


def train_state() -> dict:
    """A small MLP's params, Adam state after one update, and a key: the same in every process."""
    import optax

    model = fn.serial(fn.Dense(8), fn.Relu(), fn.Dense(4))
    _, params, _ = model.init(jax.random.key(0), (None, 6))
    optimizer = optax.adam(1e-2)
    grads = jax.tree.map(lambda p: p * 0.5 + 1.0, params)
    updates, opt_state = optimizer.update(grads, optimizer.init(params), params)
    return {"params": optax.apply_updates(params, updates), "opt_state": opt_state, "key": jax.random.key(11)}


def _layout(tree: dict) -> dict:
    """Each leaf's device count and partition spec (None where it is not a NamedSharding)."""
    return {path: [len(leaf.sharding.device_set), str(getattr(leaf.sharding, "spec", None))]
            for path, leaf in fn.checkpoint.tree.flatten_with_paths(tree)[0] if isinstance(leaf, jax.Array)}


def _equal(tree: dict, reference: dict) -> bool:
    data = [jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
            for x in jax.tree.leaves((tree, reference))]
    half = len(data) // 2
    return all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(data[:half], data[half:], strict=True))


def four_devices(directory: str) -> dict:
    """One process, four devices: save an FSDP-sharded state, restore it onto 2 devices and 1; restore a
    one-device checkpoint (saved by the test) onto 2 devices."""
    from pathlib import Path

    from funcnet import checkpoint as ck

    reference = train_state()
    mesh4, mesh2 = Mesh(np.array(jax.devices()), ("data",)), Mesh(np.array(jax.devices()[:2]), ("data",))
    sharded = fn.sharding.place(reference, fn.sharding.param_shardings(reference, mesh4, param_sharding="fsdp"))
    ck.save(Path(directory) / "four", sharded)
    onto_two = fn.sharding.param_shardings(reference, mesh2, param_sharding="fsdp")
    two = ck.restore(Path(directory) / "four", like=reference, shardings=onto_two).tree
    one = ck.restore(Path(directory) / "four", like=reference,
                     shardings=jax.sharding.SingleDeviceSharding(jax.devices()[3])).tree
    from_one = ck.restore(Path(directory) / "one", like=reference, shardings=onto_two).tree
    return {"saved": _layout(sharded), "two": _layout(two), "one": _layout(one), "from_one": _layout(from_one),
            "equal": [_equal(t, reference) for t in (two, one, from_one)],
            "one_device": str(next(iter(one["key"].sharding.device_set)))}


# --------------------------------------------------------------------------------------------
# Training: the same 20 steps on 1 device, 4 devices of one process, and 2 processes x 2 devices

N, FEATURES, CLASSES, BATCH, STEPS, RESUME_AT = 64, 6, 4, 16, 20, 10


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, FEATURES)).astype(np.float32)
    y = np.argmax(x @ rng.standard_normal((FEATURES, CLASSES)), axis=1).astype(np.int32)
    return x, y


def batch_rows(step: int) -> np.ndarray:
    """The rows of the global batch of ``step``: each epoch a new permutation (the data position is the step)."""
    epoch, index = divmod(step, N // BATCH)
    return np.random.default_rng(100 + epoch).permutation(N)[index * BATCH:(index + 1) * BATCH]


def model() -> fn.Layer:
    return fn.serial(fn.Dense(16), fn.Relu(), fn.Dropout(0.25), fn.Dense(CLASSES))


def optimizer():
    import optax

    return optax.sgd(0.05, momentum=0.9)  # not scale-invariant (Adam is): a wrong gradient scale shows


def initial_state() -> dict:
    from funcnet.training import init_opt_state

    _, params, state = model().init(jax.random.key(0), (None, FEATURES))
    return {"params": params, "state": state, "opt_state": init_opt_state(params, optimizer()),
            "key": jax.random.key(7), "step": 0}


def train(run: dict, until: int, step_fn, mesh: Mesh | None) -> tuple[dict, list[float]]:
    """Runs ``step_fn`` from ``run["step"]`` to ``until``; each process feeds only its rows of each batch."""
    x, y = data()
    losses = []
    while run["step"] < until:
        rows = batch_rows(run["step"])
        if mesh is not None and jax.process_count() > 1:
            share = BATCH // jax.process_count()
            mine = rows[jax.process_index() * share:(jax.process_index() + 1) * share]
            batch = fn.sharding.shard_batch((x[mine], y[mine]), mesh)
        else:
            batch = (x[rows], y[rows])
        key, step_key = jax.random.split(run["key"])
        params, state, opt_state, logs = step_fn(run["params"], run["state"], run["opt_state"], batch, step_key)
        losses.append(float(np.asarray(logs["loss"].addressable_data(0))))
        if fn.distributed.is_primary():
            print(f"step {run['step'] + 1}: loss {losses[-1]:.5f}", flush=True)
        run = {"params": params, "state": state, "opt_state": opt_state, "key": key, "step": run["step"] + 1}
    return run, losses


def host_values(tree: dict) -> dict:
    """Every array leaf of ``tree`` in full, as nested lists by path (gathered from all processes)."""
    from jax.experimental import multihost_utils

    out = {}
    for path, leaf in fn.checkpoint.tree.flatten_with_paths(tree)[0]:
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            leaf = multihost_utils.process_allgather(leaf, tiled=True)
        out[path] = np.asarray(leaf).tolist()
    return out


def make_step(mesh: Mesh | None):
    from funcnet.training import make_train_step

    return make_train_step(model(), "sparse_categorical_crossentropy", optimizer(), mesh=mesh,
                           param_sharding="fsdp" if mesh is not None else None)


def training(directory: str) -> dict:
    """The 20 steps uninterrupted; then again, checkpointed after step 10, restored from disk and continued."""
    from pathlib import Path

    from funcnet import checkpoint as ck
    from funcnet.checkpoint import storage

    mesh = Mesh(np.array(jax.devices()), ("data",))
    step_fn = make_step(mesh)
    full, losses = train(initial_state(), STEPS, step_fn, mesh)
    result = {"losses": losses, "final": host_values(full)}
    if jax.process_count() == 1:
        return result

    x, y = data()
    start_state = initial_state()
    refused = []
    for call, args in ((fn.fit, {"y": y, "loss": "sparse_categorical_crossentropy", "verbose": 0}),
                       (fn.evaluate, {"y": y, "loss": "sparse_categorical_crossentropy"}), (fn.predict, {})):
        try:
            call(model(), start_state["params"], start_state["state"], x, mesh=mesh, **args)
        except ValueError as error:
            refused.append(str(error))
    result["refused"] = refused

    published = []
    original_publish = storage.publish

    def counting_publish(tmp, path, *, overwrite):
        published.append(path.name)
        return original_publish(tmp, path, overwrite=overwrite)

    storage.publish = counting_publish
    manager = ck.CheckpointManager(Path(directory) / "ckpts", max_to_keep=2)
    first, first_losses = train(initial_state(), RESUME_AT, step_fn, mesh)
    manager.save(RESUME_AT, first, metadata={"epoch": RESUME_AT // (N // BATCH), "batch_index": RESUME_AT % 4})
    del first  # the rest comes from the checkpoint only
    like = initial_state()
    restored = manager.restore_latest(like, shardings=fn.sharding.param_shardings(like, mesh, param_sharding="fsdp"))
    resumed, resumed_losses = train(restored.tree, STEPS, step_fn, mesh)
    storage.publish = original_publish
    return {**result, "resumed_losses": first_losses + resumed_losses, "resumed_final": host_values(resumed),
            "published": published, "metadata": restored.metadata, "steps": manager.steps(),
            "restored_step": restored.tree["step"],
            "restored_w_sharding": str(restored.tree["params"]["dense_0"]["w"].sharding.spec)}


SCENARIOS = {"basics": basics, "one_dies": one_dies, "checkpoint": checkpoint, "four_devices": four_devices,
             "training": training}

if __name__ == "__main__":
    scenario, directory = sys.argv[1], sys.argv[2]
    start()  # before JAX computes anything
    try:
        result = SCENARIOS[scenario](directory)
    except BaseException:  # noqa: BLE001 (any failure: report it and exit like a crash)
        # Exit now, as a crash would: a normal exit waits in jax.distributed's shutdown for the peers.
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    report(result)
