"""What resolving ``"auto"`` per platform costs at compile time.

Under ``"auto"`` each convolution and pooling layer traces both its lowerings and
``jax.lax.platform_dependent`` keeps the one for the platform it is lowered for; ``"fast"`` traces
the fast one alone, as ``"auto"`` did on the CPU when it was decided by ``jax.default_backend()``
at trace time. This script times the three stages of building a training step (the loss
gradient and an Adam update, jitted) under each mode: tracing to a jaxpr, lowering to StableHLO,
and XLA's compilation, with JAX's caches cleared before each build. Usage::

    python benchmarks/compile_cost.py                     # the CNN and the README's CNN, 5 rounds
    python benchmarks/compile_cost.py --models cnn --repeats 3
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
import time
from typing import Any

import jax
import numpy as np
import optax

import funcnet as fn
from benchmarks.contenders.funcnet_runners import build_model
from benchmarks.specs import MODELS, SMOKE_MODELS, Spec

MODES = ("auto", "fast", "reference")
STAGES = ("trace", "lower", "compile")


def _step_and_arguments(spec: Spec) -> tuple[Any, tuple]:
    """A jitted training step on ``spec``'s network and the arguments of one call."""
    model = build_model(spec)
    _, params, state = model.init(jax.random.key(0), (None, *spec.image))
    optimizer = optax.adam(1e-3)

    def loss(p: Any, x: Any, y: Any) -> Any:
        logits, _ = model.apply(p, state, x, key=jax.random.key(0), train=True)
        return optax.losses.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step(p: Any, opt_state: Any, x: Any, y: Any) -> tuple[Any, Any, Any]:
        value, grads = jax.value_and_grad(loss)(p, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, value

    x = np.zeros((spec.batch, *spec.image), np.float32)
    y = np.zeros((spec.batch,), np.int32)
    return step, (params, optimizer.init(params), x, y)


def build_seconds(step: Any, arguments: tuple, mode: str) -> dict[str, float]:
    """Seconds to trace, lower and compile ``step`` for ``arguments`` under ``mode``, cold."""
    jax.clear_caches()
    with fn.layers.set_lowering(mode):
        start = time.perf_counter()
        traced = jax.jit(step).trace(*arguments)
        traced_at = time.perf_counter()
        lowered = traced.lower()
        lowered_at = time.perf_counter()
        lowered.compile()
        compiled_at = time.perf_counter()
    return {"trace": traced_at - start, "lower": lowered_at - traced_at,
            "compile": compiled_at - lowered_at}


def measure(specs: dict[str, Spec], repeats: int) -> dict[str, dict[str, dict[str, float]]]:
    """``model -> mode -> stage -> median seconds`` (and ``"total"``), the modes interleaved in
    each round so that load from elsewhere hits them alike."""
    results = {}
    for name, spec in specs.items():
        samples: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        step, arguments = _step_and_arguments(spec)
        build_seconds(step, arguments, "auto")  # warm-up: first-use costs, not timed
        for r in range(repeats):
            for mode in MODES[r % len(MODES):] + MODES[:r % len(MODES)]:
                samples[mode].append(build_seconds(step, arguments, mode))
        results[name] = {
            mode: {stage: statistics.median(s[stage] for s in runs) for stage in STAGES}
            | {"total": statistics.median(sum(s.values()) for s in runs)}
            for mode, runs in samples.items()}
    return results


def opcode_counts(spec: Spec, mode: str) -> collections.Counter:
    """How many instructions of each opcode XLA's optimized program of the step has under
    ``mode``: equal counts under ``"auto"`` and ``"fast"`` mean the same program runs."""
    step, arguments = _step_and_arguments(spec)
    with fn.layers.set_lowering(mode):
        text = jax.jit(step).lower(*arguments).compile().as_text()
    return collections.Counter(re.findall(r"= \S+ ([\w-]+)\(", text))


def markdown(specs: dict[str, Spec], results: dict) -> str:
    """The results as a Markdown table per model."""
    lines = []
    for name, by_mode in results.items():
        lines += [f"\n{specs[name].title}, median seconds:\n",
                  "| Mode | Trace | Lower | Compile | Total | Total x fast |", "|---|---|---|---|---|---|"]
        fast = by_mode["fast"]["total"]
        for mode, seconds in by_mode.items():
            cells = " | ".join(f"{seconds[stage]:.3f}" for stage in (*STAGES, "total"))
            lines.append(f"| {mode} | {cells} | {seconds['total'] / fast:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Runs the measurement and prints the tables; returns the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="cnn,readme_cnn",
                        help=f"comma-separated, of {','.join(n for n in MODELS if 'cnn' in n)}")
    parser.add_argument("--repeats", type=int, default=5, help="rounds (builds per mode)")
    parser.add_argument("--smoke", action="store_true", help="the tiny networks, for a quick check")
    args = parser.parse_args(argv)
    catalogue = SMOKE_MODELS if args.smoke else MODELS
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if not names or set(names) - set(catalogue) or args.repeats < 1:
        parser.error(f"--models takes names from {list(catalogue)}; --repeats at least 1")
    specs = {n: catalogue[n] for n in names}
    results = measure(specs, args.repeats)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {args.repeats} rounds")
    print(markdown(specs, results))
    for name, spec in specs.items():
        auto, fast = opcode_counts(spec, "auto"), opcode_counts(spec, "fast")
        print(f"\n{name}: optimized program under auto: {sum(auto.values())} instructions "
              f"({auto['fusion']} fusions, {auto['conditional']} conditionals); under fast: "
              f"{sum(fast.values())}; the same opcode counts: {auto == fast}")
    return results


if __name__ == "__main__":
    main()
