"""The mesh switch's cost: the MLP and CNN step and ``fit`` on 1, 2 and 4 forced CPU devices, same global batch.

Each device count runs in its own process (``XLA_FLAGS=--xla_force_host_platform_device_count=N``
must be set before JAX starts)::

    python -m benchmarks.scale_bench 4 --models mlp,cnn --steps mlp=40 --repeats 5

prints one JSON line: per model, the steps per second of

* ``step``: ``make_train_step(..., mesh=mesh)`` over all N devices, called per batch on NumPy
  batches (placed shard by shard);
* ``fit``: one epoch of ``fit(..., mesh=mesh, mode="scan")`` (data resident, split over the devices);

and, in the 1-device process, the same two without a mesh (the baseline), interleaved in rounds
with the mesh runs (:func:`benchmarks.timing.rounds`). :func:`run` launches one process per device
count and reports each rate as a ratio to the baseline. The forced CPU devices share the
machine's cores, so the ratios measure the partitioned program's overhead (collectives, per-device
dispatch), not a speed-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES = (1, 2, 4)


def measure(spec: Any, steps: int, repeats: int, mesh: Any) -> dict[str, list[float]]:
    """Steps per second of the step loop and of fit, per round, with ``mesh`` and (1 device) without."""
    import jax

    import funcnet as fn
    from benchmarks.contenders.funcnet_runners import LOSS, build_model
    from benchmarks.specs import random_data
    from benchmarks.timing import rounds

    model = build_model(spec)
    x, y = random_data(spec, steps)
    input_spec = (None, *spec.image)

    def step_block(mesh_or_none: Any) -> Callable[[], float]:
        step = fn.make_train_step(model, LOSS, "adam", mesh=mesh_or_none)
        _, params, state = model.init(jax.random.key(0), input_spec)
        carry = [params, state, fn.training.init_opt_state(params, "adam")]
        run_steps(step, carry, x, y, spec.batch, 2)  # compile and warm up

        def block() -> float:
            started = time.perf_counter()
            run_steps(step, carry, x, y, spec.batch, steps)
            return steps / (time.perf_counter() - started)

        return block

    def fit_block(mesh_or_none: Any) -> Callable[[], float]:
        _, params, state = model.init(jax.random.key(0), input_spec)
        options = {"loss": LOSS, "batch_size": spec.batch, "verbose": 0, "mode": "scan", "mesh": mesh_or_none}
        fn.fit(model, params, state, x, y, **options)  # compile

        def block() -> float:
            started = time.perf_counter()
            result = fn.fit(model, params, state, x, y, **options)
            jax.block_until_ready(result.params)
            return steps / (time.perf_counter() - started)

        return block

    blocks = {"step": step_block(mesh), "fit": fit_block(mesh)}
    if jax.device_count() == 1:
        blocks.update({"step (no mesh)": step_block(None), "fit (no mesh)": fit_block(None)})
    return rounds(blocks, repeats)


def run_steps(step: Callable, carry: list, x: Any, y: Any, batch: int, steps: int) -> None:
    """``steps`` calls of ``step`` on consecutive batches, updating ``carry`` (params, state, opt_state)."""
    import jax

    logs = None
    for i in range(steps):
        rows = slice(i * batch, (i + 1) * batch)
        carry[0], carry[1], carry[2], logs = step(*carry, (x[rows], y[rows]), jax.random.key(i))
    jax.block_until_ready(logs)


def worker(argv: list[str]) -> None:
    """The process for one device count: ``N --models a,b --steps a=S,b=S --repeats R [--smoke]``."""
    devices = int(argv[0])
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    options = dict(zip(argv[1::2], argv[2::2], strict=False))
    import jax

    from benchmarks.specs import MODELS, SMOKE_MODELS
    from benchmarks.timing import median

    specs = SMOKE_MODELS if "--smoke" in argv else MODELS
    steps = dict(pair.split("=") for pair in options["--steps"].split(","))
    mesh = jax.make_mesh((devices,), ("data",))
    results = {}
    for name in options["--models"].split(","):
        rates = measure(specs[name], int(steps[name]), int(options["--repeats"]), mesh)
        results[name] = {contender: {"steps_per_s": median(r), "rounds": r} for contender, r in rates.items()}
    print(json.dumps({"devices": devices, "results": results}), flush=True)


def run(models: dict, steps: dict[str, int], repeats: int, log: Callable[[str], None], smoke: bool = False,
        devices: tuple[int, ...] = DEVICES) -> dict:
    """One process per device count; each rate also as a ratio to the one-device run without a mesh."""
    names = [name for name in models if name in ("mlp", "cnn")] or list(models)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    per_count = {}
    for n in devices:
        log(f"scale: {n} device(s), {', '.join(names)}")
        command = [sys.executable, "-m", "benchmarks.scale_bench", str(n), "--models", ",".join(names),
                   "--steps", ",".join(f"{m}={steps[m]}" for m in names), "--repeats", str(repeats)]
        done = subprocess.run(command + (["--smoke"] if smoke else []), cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"the {n}-device scale process failed:\n{done.stderr[-3000:]}")
        per_count[n] = json.loads(done.stdout.strip().splitlines()[-1])["results"]
    table: dict[str, Any] = {}
    for name in names:
        baseline = per_count[devices[0]][name]
        rows = {}
        for n in devices:
            for kind in ("step", "fit"):
                rate = per_count[n][name][kind]["steps_per_s"]
                base = baseline[f"{kind} (no mesh)"]["steps_per_s"]
                rows[f"{kind}, {n} device(s)"] = {"steps_per_s": rate, "ratio_to_one_device": rate / base}
        for kind in ("step", "fit"):
            rows[f"{kind}, no mesh"] = {"steps_per_s": baseline[f"{kind} (no mesh)"]["steps_per_s"],
                                        "ratio_to_one_device": 1.0}
        table[name] = {"title": models[name].title, "steps": steps[name], "results": rows}
    return table


if __name__ == "__main__":
    worker(sys.argv[1:])
