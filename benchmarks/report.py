"""The benchmark's results as Markdown tables (pasted into docs/benchmarks.md)."""

from __future__ import annotations

import math
from typing import Any


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def machine_text(info: dict) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
    load = info.get("load_average_at_start")
    return (f"Machine: {info.get('cpu')}, {info.get('cores')} cores, {info.get('memory_gib')} GiB; "
            f"{info.get('platform')}; Python {info.get('python')}\n"
            f"Load average at start (1, 5, 15 min): {load}\nVersions: {versions}\n"
            f"XLA_FLAGS: {info.get('xla_flags') or '(none)'}")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def step_tables(step: dict) -> str:
    parts = []
    for model in step.values():
        rows = []
        for name, r in model["results"].items():
            if "skipped" in r:
                rows.append([name, "–", "–", "–", "–", "–", "–", r["skipped"]])
                continue
            memory = r.get("memory") or {}
            peak = memory.get("peak_rss_mib")
            train = memory.get("training_mib")
            mem_text = (f"{peak:.0f} ({train:+.0f})" if peak is not None
                        else memory.get("error", "–"))
            rows.append([name, _f(r["steps_per_s"]), _f(r.get("ratio_to_hand_jax")), _f(r.get("ratio_to_torch")),
                         _f(r["first_step_s"], 1), mem_text, str(r["compiles_while_timed"]),
                         _f(r["final_loss"], 3)])
        parts.append(f"**{model['title']}** ({model['gflop_per_step']:.2f} GFLOP per step, "
                     f"blocks of {model['steps_per_block']} steps)\n\n" + _table(
                         ["Contender", "Steps/s (median)", "× hand-written JAX", "× PyTorch", "First step (s)",
                          "Peak RSS MiB (training)", "Compiles while timed", "Last loss"], rows))
    return "\n\n".join(parts)


def scale_tables(scale: dict) -> str:
    """One table per network: steps per second and the ratio to one device without a mesh."""
    parts = []
    for model in scale.values():
        rows = [[name, _f(r["steps_per_s"], 1), _f(r["ratio_to_one_device"])] for name, r in model["results"].items()]
        parts.append(f"**{model['title']}**, blocks of {model['steps']} steps\n\n"
                     + _table(["Run", "Steps/s (median)", "× one device, no mesh"], rows))
    return "\n\n".join(parts)


def epoch_table(epoch: dict, baseline: str = "baseline") -> str:
    rows = [[name, _f(r["epoch_s"], 3), _f(r["steps_per_s"], 0), _f(r["ratio_to_baseline"]),
             _f(r["first_call_s"], 1), str(r["compiles_while_timed"])]
            for name, r in epoch["results"].items()]
    return (f"**{epoch['title']}**, epochs of {epoch['steps']} steps\n\n"
            + _table(["Loop", "Seconds per epoch (median)", "Steps/s", f"Time × {baseline}",
                      "First epoch (s)", "Compiles while timed"], rows))


def markdown(results: dict) -> str:
    parts = []
    if "step" in results:
        parts.append("### Training step, side by side\n\n" + step_tables(results["step"]))
    if "seq" in results:
        parts.append("### Sequence models, side by side\n\n" + step_tables(results["seq"]))
    if "epoch" in results:
        parts.append("### One epoch of the batch-32 MLP\n\n"
                     + epoch_table(results["epoch"], "the lax.scan epoch"))
    if "modes" in results:
        parts.append("### fit's modes\n\n" + "\n\n".join(
            epoch_table(m, m.get("baseline", "fit step")) for m in results["modes"].values()))
    if "mnist" in results:
        rows = []
        for name, r in results["mnist"].items():
            reached = r.get("reached_s")
            rows.append([name, r.get("recipe", ""), _f(reached, 1) if reached else "not reached",
                         _f(r.get("best_accuracy"), 4), str(r.get("epochs_run", "–")),
                         _f(r.get("data_loaded_s"), 1), r.get("note", "")])
        parts.append("### Time to 99.0% MNIST test accuracy\n\n" + _table(
            ["Recipe", "What", "Seconds from process start", "Best test accuracy", "Epochs",
             "Data loaded at (s)", "Note"], rows))
    if "scale" in results:
        parts.append("### Many devices: the mesh switch on forced CPU devices\n\n" + scale_tables(results["scale"]))
    return "\n\n".join(parts)
