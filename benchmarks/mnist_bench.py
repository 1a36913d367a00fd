"""Wall time from process start to 99.0% MNIST test accuracy, one fresh process per recipe.

MNIST is first prepared into a TFDS cache (not timed: the issue times loading the *prepared* data
set); then each recipe of :mod:`benchmarks.mnist_recipes` runs in its own process, which reports
its test accuracy after each epoch with the seconds since it was launched.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

DESCRIPTIONS = {
    "funcnet": "funcnet: Conv32/2-BN-Conv64/2-BN-Dense128-Dense10, Adam one-cycle 3e-3, batch 128",
    "torch": "seed PyTorch recipe (example 4): SGD 0.01 momentum 0.9, batch 64",
    "torch-1-thread": "the same, PyTorch set to 1 thread",
    "keras": "seed Keras recipe (example 3): Adam, batch 32, TensorFlow backend",
}
NEEDS = {"funcnet": (), "torch": ("torch",), "torch-1-thread": ("torch",),
         "keras": ("keras", "tensorflow")}


def prepare(mnist_dir: str, cache: str | None) -> None:
    """Prepares MNIST into ``cache`` (once; later calls only read it), in a separate process."""
    code = ("from funcnet import data; import sys; "
            "data.load('mnist', manual_dir=sys.argv[1], data_dir=sys.argv[2] or None)")
    subprocess.run([sys.executable, "-c", code, mnist_dir, cache or ""], check=True, cwd=ROOT,
                   capture_output=True, text=True)


def run_recipe(recipe: str, args: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """Runs one recipe in a fresh process; returns its time to the target and its epochs."""
    name, extra = recipe, []
    if recipe == "torch-1-thread":
        name, extra = "torch", ["--threads", "1"]
    t0 = time.time()
    command = [sys.executable, os.path.join(HERE, "mnist_recipes.py"), name, "--t0", repr(t0),
               "--mnist-dir", args.mnist_dir,
               *(["--cache", args.mnist_cache] if args.mnist_cache else []),
               "--target", str(args.mnist_target), "--budget", str(args.mnist_budget),
               "--max-epochs", str(args.mnist_max_epochs),
               "--train-size", str(args.mnist_train_size), *extra]
    result: dict[str, Any] = {"recipe": DESCRIPTIONS[recipe], "epochs": []}
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                              timeout=args.mnist_budget + 300)
        output, failed = done.stdout, done.returncode != 0
        error = done.stderr.strip().splitlines()[-1:] if failed else []
    except subprocess.TimeoutExpired as expired:
        output, failed = expired.stdout or "", True
        output = output.decode() if isinstance(output, bytes) else output
        error = [f"stopped after {args.mnist_budget + 300:.0f} s"]
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event["event"] == "data":
            result["data_loaded_s"] = event["elapsed"]
        elif event["event"] == "epoch":
            result["epochs"].append((event["epoch"], event["elapsed"], event["accuracy"]))
            log(f"  {recipe}: epoch {event['epoch']} at {event['elapsed']:6.1f} s, "
                f"test accuracy {event['accuracy']:.4f}")
            if event["accuracy"] >= args.mnist_target and "reached_s" not in result:
                result["reached_s"] = event["elapsed"]
    if result["epochs"]:
        result["best_accuracy"] = max(a for _, _, a in result["epochs"])
        result["epochs_run"] = len(result["epochs"])
    if failed:
        result["note"] = "failed: " + " ".join(error)
    elif "reached_s" not in result:
        result["note"] = f"not reached within {args.mnist_budget:.0f} s or the epoch limit"
    return result


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    recipes = [r.strip() for r in args.mnist_recipes.split(",") if r.strip()]
    log(f"\n== Time to {args.mnist_target:.1%} MNIST test accuracy: {', '.join(recipes)}")
    log("  preparing MNIST in the TFDS cache (not timed)")
    prepare(args.mnist_dir, args.mnist_cache)
    results = {}
    for recipe in recipes:
        missing = [p for p in NEEDS.get(recipe, ()) if importlib.util.find_spec(p) is None]
        if recipe not in DESCRIPTIONS:
            results[recipe] = {"note": f"unknown recipe; choose from {sorted(DESCRIPTIONS)}"}
        elif missing:
            results[recipe] = {"recipe": DESCRIPTIONS[recipe],
                               "note": f"skipped: not installed: {', '.join(missing)}"}
        else:
            results[recipe] = run_recipe(recipe, args, log)
        log(f"{recipe}: {results[recipe].get('reached_s', 'not reached')} "
            f"{results[recipe].get('note', '')}")
    return results
