"""Peak memory of one contender, measured in a process of its own.

XLA's buffers live outside Python's allocator (``tracemalloc`` cannot see them), so memory is the
process's resident set. A fresh process imports the contender's library and makes the benchmark's
data; then the kernel's peak counter is reset (``/proc/self/clear_refs``), the contender is
started and runs some steps. ``peak_rss_mib`` is the peak resident set size since the reset
(``VmHWM``), so the transient peaks of the imports do not count; ``training_mib`` is that peak less
the resident size just before the contender was started, which is what building and training the
network added. Where the counter cannot be reset, the whole process's peak (``ru_maxrss``) is
reported instead and ``reset`` is False. Run as ``python benchmarks/memory.py --model cnn --contender "funcnet step"``;
prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Modules a contender imports only when it starts; imported before the baseline is taken.
PRELOAD = {"Flax linen": ("flax.linen",), "Flax NNX": ("flax.nnx",), "Equinox": ("equinox",),
           "Haiku": ("haiku",), "PyTorch eager": ("torch",), "PyTorch eager (1 thread)": ("torch",)}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> bool:
    """Resets the kernel's peak resident size of this process (Linux); False if it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mib(reset: bool) -> float:
    if reset:
        with open("/proc/self/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        return kib / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(model: str, contender: str, steps: int, smoke: bool) -> dict:
    """In this process: start ``contender`` on ``model`` and run ``steps`` steps."""
    from benchmarks import contenders as cont
    from benchmarks.seq_specs import SEQ_MODELS, SMOKE_SEQ_MODELS
    from benchmarks.specs import MODELS, SMOKE_MODELS, random_data

    spec = ({**SMOKE_MODELS, **SMOKE_SEQ_MODELS} if smoke else {**MODELS, **SEQ_MODELS})[model]
    x, y = random_data(spec, steps)
    runner = cont.make(contender, spec, x, y)
    for module in ("jax", "optax", *PRELOAD.get(contender, ())):  # imports are not training
        importlib.import_module(module)
    before = _rss_mib()
    reset = _reset_peak()
    runner.start()
    runner.run(steps)
    peak = _peak_mib(reset)
    return {"peak_rss_mib": round(peak, 1), "training_mib": round(peak - before, 1), "reset": reset}


def in_subprocess(model: str, contender: str, steps: int, smoke: bool,
                  timeout: float = 900) -> dict | None:
    """:func:`measure` in a fresh Python process; None (with the error) if it failed."""
    command = [sys.executable, os.path.abspath(__file__), "--model", model,
               "--contender", contender, "--steps", str(steps)] + (["--smoke"] if smoke else [])
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--contender", required=True)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    print(json.dumps(measure(args.model, args.contender, args.steps, args.smoke)))


if __name__ == "__main__":
    main()
