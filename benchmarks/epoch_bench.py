"""Whole epochs: the batch-32 MLP's epoch through fit and hand-written loops, and fit's modes.

Each contender's block is one shuffled epoch over the same random MNIST-shaped data; blocks are
interleaved in rounds (see :mod:`benchmarks.timing`) after a first, compiling epoch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from benchmarks.contenders.base import Runner
from benchmarks.contenders.epoch_loops import (
    HandHostLoop,
    HandScanEpoch,
    TorchEpoch,
    TorchEpochOneThread,
)
from benchmarks.contenders.funcnet_runners import fit_runner
from benchmarks.contenders.jax_peers import HandJax
from benchmarks.specs import Spec, random_data
from benchmarks.timing import CompileCounter, median, ratio, rounds, timed


def compare(factories: dict[str, Callable[..., Runner]], spec: Spec, steps: int, repeats: int,
            baseline: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Starts each contender on ``steps`` batches, then times ``repeats`` interleaved epochs.

    Returns ``{contender: {"epoch_s", "steps_per_s", "ratio_to_<baseline>", "first_call_s",
    "compiles_while_timed"}}`` with the baseline's ratio 1.
    """
    x, y = random_data(spec, steps)
    counter = CompileCounter()
    runners, results = {}, {}
    for name, factory in factories.items():
        runner = factory(spec, x, y)
        _, first = timed(runner.start)
        runners[name], results[name] = runner, {"first_call_s": first}
        log(f"{name:34s} first epoch {first:7.2f} s")
    compiles = {name: 0 for name in runners}

    def block(name: str) -> Callable[[], float]:
        def one() -> float:
            before = counter.count
            with counter.watching():
                _, seconds = timed(lambda: runners[name].run(steps))
            compiles[name] += counter.count - before
            return steps / seconds

        return one

    rates = rounds({name: block(name) for name in runners}, repeats,
                   on_round=lambda r: log(f"  round {r + 1}/{repeats} done"))
    for name, runner in runners.items():
        rate = median(rates[name])
        results[name].update(steps_per_s=rate, epoch_s=steps / rate, rates=rates[name],
                             ratio_to_baseline=ratio(rates[baseline], rates[name]),
                             compiles_while_timed=compiles[name], final_loss=runner.loss())
        log(f"{name:34s} {steps / rate:7.3f} s per epoch  {rate:8.1f} steps/s  time x"
            f"{results[name]['ratio_to_baseline']:5.2f} of {baseline}  "
            f"compiles while timed {compiles[name]}")
    return results


def run_epoch(spec: Spec, steps: int, repeats: int, log: Callable[[str], None],
              torch: bool = True) -> dict[str, Any]:
    """One epoch of ``spec`` (the batch-32 MLP): fit (auto, step, scan), a hand-written
    ``lax.scan`` epoch, a per-step jitted loop over host batches, and (with ``torch``, if it is
    installed) PyTorch eager."""
    log(f"\n== One epoch of {spec.title}: {steps} steps, {repeats} rounds")
    factories: dict[str, Callable[..., Runner]] = {
        "hand-written lax.scan epoch": HandScanEpoch,
        "funcnet fit (mode auto)": fit_runner("auto"),
        "funcnet fit (mode step)": fit_runner("step"),
        "funcnet fit (mode scan)": fit_runner("scan"),
        "per-step jit loop, host batches": HandHostLoop,
    }
    if torch and importlib.util.find_spec("torch") is not None:
        factories["PyTorch eager loop"] = TorchEpoch
        factories["PyTorch eager loop (1 thread)"] = TorchEpochOneThread
    results = compare(factories, spec, steps, repeats, "hand-written lax.scan epoch", log)
    return {"title": spec.title, "steps": steps, "results": results}


def run_modes(models: dict[str, Spec], steps: dict[str, int], repeats: int,
              log: Callable[[str], None], lowerings: tuple[str, ...] = ("auto",)) -> dict[str, Any]:
    """fit's ``"step"`` and ``"scan"`` modes (whole epoch, and 10 or 100 steps per call) on each
    network and layer lowering, next to the hand-written step (device batches) and the
    hand-written scan epoch (networks without dropout)."""
    report = {}
    for name, spec in models.items():
        n = steps[name]
        log(f"\n== fit's modes on {spec.title}: epochs of {n} steps, {repeats} rounds")
        factories: dict[str, Callable[..., Runner]] = {}
        for lowering in lowerings:
            suffix = "" if lowering == "auto" else f", {lowering} lowering"
            factories[f"fit step{suffix}"] = fit_runner("step", lowering=lowering)
            factories[f"fit scan (whole epoch){suffix}"] = fit_runner("scan", lowering=lowering)
            factories[f"fit scan, steps_per_call=10{suffix}"] = fit_runner("scan", 10, lowering)
            if n >= 200:
                factories[f"fit scan, steps_per_call=100{suffix}"] = fit_runner("scan", 100,
                                                                                lowering)
            factories[f"fit auto{suffix}"] = fit_runner("auto", lowering=lowering)
        if not spec.dropout:
            factories["hand-written step (device batches)"] = _hand_jax_epoch
            factories["hand-written lax.scan epoch"] = HandScanEpoch
        baseline = "fit step" if "auto" in lowerings else next(iter(factories))
        results = compare(factories, spec, n, repeats, baseline, log)
        report[name] = {"title": spec.title, "steps": n, "baseline": baseline, "results": results}
    return report


def _hand_jax_epoch(spec: Spec, x: Any, y: Any) -> Runner:
    """The hand-written jitted step over device batches, started on a whole epoch of them."""
    runner = HandJax(spec, x, y)
    start = runner.start

    def start_epoch() -> None:
        start()
        runner.run(runner.batches - 1)

    runner.start = start_epoch  # type: ignore[method-assign]
    runner.first_call_steps = runner.batches  # type: ignore[attr-defined]
    return runner
