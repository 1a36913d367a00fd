"""The side-by-side step benchmark: every contender trains the same network in one process.

For each network, every installed contender is started (its first step: build, trace, compile,
run) and then timed in interleaved rounds of ``steps`` training steps each. Reported per
contender: training steps per second (median over rounds), the time to the first step, the ratio
of its rate to the hand-written JAX step's (median of per-round ratios), the XLA compilations
seen during the timed rounds (0 means no step recompiled), and, when asked, peak memory from a
separate process (:mod:`benchmarks.memory`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from benchmarks import contenders as cont
from benchmarks.specs import Spec, random_data
from benchmarks.timing import CompileCounter, median, ratio, rounds, timed

BASELINE = "hand-written JAX"
TORCH = "PyTorch eager"


def run(models: dict[str, Spec], names: list[str], steps: dict[str, int], repeats: int,
        log: Callable[[str], None],
        memory: Callable[[str, str], dict | None] | None = None) -> dict:
    """The step benchmark for each network of ``models``.

    Args:
        models: the networks, by name (:mod:`benchmarks.specs`' or :mod:`benchmarks.seq_specs`').
        names: the contenders (keys of :func:`benchmarks.contenders.registry` for each network's
            family; a name that family lacks is left out).
        steps: steps per timed block, by network name.
        repeats: timed rounds.
        log: progress output.
        memory: ``(model name, contender) -> memory figures`` (separate processes), or None.

    Returns:
        ``{model name: {"spec": ..., "steps": ..., "results": {contender: {...}}}}``.
    """
    counter = CompileCounter()
    report: dict[str, Any] = {}
    for model_name, spec in models.items():
        n = steps[model_name]
        x, y = random_data(spec, n)
        log(f"\n== {spec.title}: {n} steps per block, {repeats} rounds")
        results: dict[str, dict] = {}
        runners: dict[str, cont.Runner] = {}
        for name in (n for n in names if n in cont.registry(spec)):
            missing = cont.missing_packages(name, spec)
            if missing or (spec.dropout and not name.startswith("funcnet")):
                reason = f"not installed: {', '.join(missing)}" if missing else "no dropout here"
                results[name] = {"skipped": reason}
                log(f"{name:18s} skipped ({results[name]['skipped']})")
                continue
            runner = cont.make(name, spec, x, y)
            _, first = timed(runner.start)
            runners[name] = runner
            results[name] = {"first_call_s": first}
            log(f"{name:18s} first step {first:6.2f} s")

        compiles = {name: 0 for name in runners}

        # block's closures run within this iteration (rounds below), so they see this iteration's values.
        def block(name: str) -> Callable[[], float]:
            def one() -> float:
                before = counter.count
                with counter.watching():
                    _, seconds = timed(lambda: runners[name].run(n))  # noqa: B023
                compiles[name] += counter.count - before  # noqa: B023
                return n / seconds  # noqa: B023

            return one

        rates = rounds({name: block(name) for name in runners}, repeats,
                       on_round=lambda r: log(f"  round {r + 1}/{repeats} done"))
        for name, runner in runners.items():
            result = results[name]
            rate = median(rates[name])
            result.update(steps_per_s=rate, rates=rates[name], compiles_while_timed=compiles[name],
                          final_loss=runner.loss())
            # fit's first call runs a whole epoch; its first step is that call less the other steps.
            extra = getattr(runner, "first_call_steps", 1) - 1
            result["first_step_s"] = result["first_call_s"] - extra / rate
            if BASELINE in rates:
                result["ratio_to_hand_jax"] = ratio(rates[name], rates[BASELINE])
            if TORCH in rates:
                result["ratio_to_torch"] = ratio(rates[name], rates[TORCH])
            if memory is not None:
                result["memory"] = memory(model_name, name)
            vs_hand = result.get("ratio_to_hand_jax", math.nan)
            vs_torch = result.get("ratio_to_torch", math.nan)
            log(f"{name:18s} {rate:8.2f} steps/s  x{vs_hand:5.2f} "
                f"of hand-written JAX  x{vs_torch:5.2f} of PyTorch  first step {result['first_step_s']:6.2f} s  "
                f"loss {result['final_loss']:.3f}  compiles while timed {compiles[name]}")
        report[model_name] = {"title": spec.title, "batch": spec.batch, "steps_per_block": n,
                              "gflop_per_step": spec.flops_per_step() / 1e9, "results": results}
    return report
