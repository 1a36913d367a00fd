"""The benchmark harness runs end to end at a tiny size (so that it cannot rot unnoticed).

Only funcnet and the hand-written JAX step take part (peer libraries are optional), on the small
MLP (the networks differ only in their specs); the figures are not checked, only that every
benchmark produced them, that no timed step recompiled, and that the report renders. The MNIST
benchmark needs the prepared data set and is left out (``--only mnist --mnist-train-size``
runs it reduced).
"""

from __future__ import annotations

import math

from benchmarks import run


def test_benchmark_harness_runs_at_a_tiny_size(capsys):
    results = run.main(["--smoke", "--only", "step,epoch,modes", "--models", "mlp_small",
                        "--contenders", "funcnet step,funcnet fit,hand-written JAX",
                        "--repeats", "1", "--epoch-repeats", "1"])
    printed = capsys.readouterr().out

    step = results["step"]
    assert set(step) == {"mlp_small"}
    for model in step.values():
        assert set(model["results"]) == {"funcnet step", "funcnet fit", "hand-written JAX"}
        for result in model["results"].values():
            assert result["steps_per_s"] > 0 and result["first_step_s"] > 0
            assert result["compiles_while_timed"] == 0
            assert math.isfinite(result["final_loss"])
        assert model["results"]["hand-written JAX"]["ratio_to_hand_jax"] == 1.0

    epoch = results["epoch"]["results"]
    assert "hand-written lax.scan epoch" in epoch and "funcnet fit (mode auto)" in epoch
    assert not any(name.startswith("PyTorch") for name in epoch)
    assert all(r["epoch_s"] > 0 and r["compiles_while_timed"] == 0 for r in epoch.values())
    modes = results["modes"]
    assert set(modes) == {"mlp_small"}
    assert all(r["epoch_s"] > 0 for m in modes.values() for r in m["results"].values())

    assert "### Training step, side by side" in printed and "| funcnet fit |" in printed
    assert "### fit's modes" in printed


def test_seq_benchmark_runs_at_a_tiny_size(capsys):
    results = run.main(["--smoke", "--only", "seq", "--seq-contenders", "funcnet step,hand-written JAX",
                        "--repeats", "1"])
    printed = capsys.readouterr().out

    seq = results["seq"]
    assert set(seq) == {"lstm", "encoder"}
    lstm = seq["lstm"]["results"]
    assert set(lstm) == {"funcnet step", "hand-written JAX"}
    for result in lstm.values():
        assert result["steps_per_s"] > 0 and result["compiles_while_timed"] == 0
        assert math.isfinite(result["final_loss"])
    encoder = seq["encoder"]["results"]["hand-written JAX"]
    assert encoder["steps_per_s"] > 0 and encoder["compiles_while_timed"] == 0
    assert "### Sequence models, side by side" in printed and "| funcnet step |" in printed


def test_compile_cost_runs_at_a_tiny_size():
    from benchmarks import compile_cost
    from benchmarks.specs import Spec

    specs = {"tiny": Spec("tiny", "Conv2-Pool-Dense10 on 6x6 images", 2, convs=((2, True),), image=(6, 6, 1))}
    results = compile_cost.measure(specs, repeats=1)
    assert set(results["tiny"]) == {"auto", "fast", "reference"}
    assert all(seconds["total"] > 0 for seconds in results["tiny"].values())
    assert "| auto |" in compile_cost.markdown(specs, results)
