"""Runs funcnet's benchmarks and prints their tables (see docs/benchmarks.md).

    python benchmarks/run.py                      # everything (about an hour on 2 cores)
    python benchmarks/run.py --only step --models cnn --repeats 5
    python benchmarks/run.py --smoke              # every benchmark at a tiny size, in about a minute
    python benchmarks/run.py --only seq --no-memory --repeats 9

Benchmarks (``--only``, comma-separated):

* ``step``: the side-by-side training-step benchmark (funcnet's step and fit, hand-written JAX,
  Flax linen and NNX, Equinox, Haiku, PyTorch eager) on the MLP 784-512-512-10 and the CNN at
  batch 128 and the MLP 784-256-10 at batch 32;
* ``seq``: the same method on sequence models: an LSTM(128) classifier on 28 steps of 28
  features at batch 128 (funcnet's step and fit, hand-written JAX ``lax.scan`` LSTMs, Flax
  linen's LSTM, PyTorch ``nn.LSTM``) and a 2-block pre-norm transformer encoder at batch 32,
  sequence 128 (funcnet, hand-written JAX, PyTorch ``nn.TransformerEncoder``);
* ``epoch``: one epoch of the batch-32 MLP (1875 steps) through fit, a hand-written
  ``lax.scan`` epoch, a per-step jitted loop over host batches and PyTorch;
* ``modes``: fit's ``"step"`` and ``"scan"`` modes (and ``steps_per_call``) on each network;
* ``mnist``: wall time from process start to 99.0% MNIST test accuracy, funcnet's recipe next to
  the seed's PyTorch and Keras recipes (``--mnist-dir``: the four original MNIST files);
* ``scale``: the MLP and CNN (of ``--models``) step and fit with ``mesh=`` on 1, 2 and 4 forced CPU
  devices at the same global batch, each device count in its own process, as ratios to one
  device without a mesh (see benchmarks/scale_bench.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

BENCHMARKS = ("step", "seq", "epoch", "modes", "mnist", "scale")
DEFAULT_STEPS = {"mlp": 40, "cnn": 15, "mlp_small": 200, "readme_cnn": 15}
SEQ_STEPS = {"lstm": 20, "encoder": 5}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from benchmarks.contenders import CONTENDERS, ENCODER_CONTENDERS, LSTM_CONTENDERS

    seq_contenders = list(dict.fromkeys([*LSTM_CONTENDERS, *ENCODER_CONTENDERS]))

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"benchmarks to run, comma-separated, of {','.join(BENCHMARKS)}")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny networks, few steps and rounds, no memory processes, one MNIST "
                             "epoch on 2,000 images: checks that the harness runs")
    parser.add_argument("--models", default="mlp,cnn,mlp_small",
                        help="networks for step and modes (also readme_cnn: the README's CNN, "
                             "with dropout, for funcnet's contenders and modes only)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help="step-benchmark contenders, comma-separated")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (medians over them)")
    parser.add_argument("--steps", action="append", default=[], metavar="MODEL=N",
                        help=f"steps per timed block (defaults {DEFAULT_STEPS})")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory processes of the step benchmark")
    parser.add_argument("--seq-models", default=",".join(SEQ_STEPS),
                        help=f"networks for seq, comma-separated, of {','.join(SEQ_STEPS)}")
    parser.add_argument("--seq-contenders", default=",".join(seq_contenders),
                        help="seq contenders, comma-separated (each network takes those it has)")
    parser.add_argument("--seq-steps", action="append", default=[], metavar="MODEL=N",
                        help=f"steps per timed block for seq (defaults {SEQ_STEPS})")
    parser.add_argument("--epoch-steps", type=int, default=1875,
                        help="steps in the epoch benchmark's epoch (1875 = 60000 / 32)")
    parser.add_argument("--epoch-repeats", type=int, default=5)
    parser.add_argument("--modes-steps", action="append", default=[], metavar="MODEL=N",
                        help="steps per epoch in the modes benchmark (defaults: mlp 120, cnn 60, "
                             "mlp_small 1875, readme_cnn 60)")
    parser.add_argument("--modes-lowering", default="auto",
                        help="layer lowerings for the modes benchmark, comma-separated, of "
                             "auto,reference,fast")
    parser.add_argument("--mnist-dir", default=os.path.join(ROOT, "..", "shared", "data", "mnist"),
                        help="folder with the four original MNIST files")
    parser.add_argument("--mnist-cache", default=None,
                        help="TFDS data_dir where MNIST is prepared once, not timed (default: "
                             "TFDS's, ~/tensorflow_datasets)")
    parser.add_argument("--mnist-recipes", default="funcnet,torch,torch-1-thread,keras")
    parser.add_argument("--mnist-target", type=float, default=0.99)
    parser.add_argument("--mnist-budget", type=float, default=600,
                        help="seconds each recipe may run before it is stopped")
    parser.add_argument("--mnist-max-epochs", type=int, default=10)
    parser.add_argument("--mnist-train-size", type=int, default=0,
                        help="train on the first N examples only (0: all; a reduced run)")
    parser.add_argument("--out", help="also write the results as JSON to this file")
    smoke, _ = parser.parse_known_args(argv)
    if smoke.smoke:  # tiny sizes by default; flags given explicitly still win
        parser.set_defaults(repeats=2, epoch_repeats=2, epoch_steps=20, no_memory=True,
                            mnist_train_size=2000, mnist_max_epochs=1)
    args = parser.parse_args(argv)
    args.only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(args.only) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; choose from {list(BENCHMARKS)}")
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = sorted(set(args.contenders) - set(CONTENDERS))
    if unknown:
        parser.error(f"unknown contenders {unknown}; choose from {list(CONTENDERS)}")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(DEFAULT_STEPS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(DEFAULT_STEPS)}")
    args.seq_models = [m.strip() for m in args.seq_models.split(",") if m.strip()]
    args.seq_contenders = [c.strip() for c in args.seq_contenders.split(",") if c.strip()]
    if set(args.seq_models) - set(SEQ_STEPS) or set(args.seq_contenders) - set(seq_contenders):
        parser.error(f"--seq-models takes names of {list(SEQ_STEPS)}, --seq-contenders of {seq_contenders}")
    args.steps = {**DEFAULT_STEPS, **_pairs(parser, args.steps, "--steps")}
    args.seq_steps = {**SEQ_STEPS, **_pairs(parser, args.seq_steps, "--seq-steps", SEQ_STEPS)}
    args.modes_steps = {"mlp": 120, "cnn": 60, "mlp_small": 1875, "readme_cnn": 60,
                        **_pairs(parser, args.modes_steps, "--modes-steps")}
    args.modes_lowering = tuple(v.strip() for v in args.modes_lowering.split(",") if v.strip())
    if not args.modes_lowering or set(args.modes_lowering) - {"auto", "reference", "fast"}:
        parser.error("--modes-lowering takes a comma-separated list of auto, reference, fast")
    if args.smoke:
        args.steps = {"mlp": 3, "cnn": 3, "mlp_small": 5, "readme_cnn": 3}
        args.modes_steps = {"mlp": 4, "cnn": 4, "mlp_small": 8, "readme_cnn": 4}
        args.seq_steps = {"lstm": 3, "encoder": 3}
    return args


def _pairs(parser: argparse.ArgumentParser, items: list[str], flag: str,
           models: dict[str, int] = DEFAULT_STEPS) -> dict[str, int]:
    pairs = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in models or not value.isdigit() or int(value) < 1:
            parser.error(f"{flag} takes MODEL=N with MODEL in {list(models)}, got {item!r}")
        pairs[name] = int(value)
    return pairs


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from benchmarks import memory as mem
    from benchmarks import report
    from benchmarks.specs import MODELS, SMOKE_MODELS
    from benchmarks.timing import load_average, machine

    def log(message: str) -> None:
        print(message, flush=True)

    specs = SMOKE_MODELS if args.smoke else MODELS
    models = {name: specs[name] for name in args.models}
    results: dict = {"machine": machine(), "smoke": args.smoke,
                     "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    log(report.machine_text(results["machine"]))
    if "step" in args.only:
        from benchmarks import step_bench

        def memory(model: str, contender: str) -> dict | None:
            log(f"  measuring memory of {contender} in a separate process")
            return mem.in_subprocess(model, contender, min(args.steps[model], 10), args.smoke)

        results["step"] = step_bench.run(models, args.contenders, args.steps, args.repeats, log,
                                         None if args.no_memory else memory)
    if "seq" in args.only:
        from benchmarks import step_bench
        from benchmarks.seq_specs import SEQ_MODELS, SMOKE_SEQ_MODELS

        def seq_memory(model: str, contender: str) -> dict | None:
            log(f"  measuring memory of {contender} in a separate process")
            return mem.in_subprocess(model, contender, min(args.seq_steps[model], 10), args.smoke)

        seq_specs = SMOKE_SEQ_MODELS if args.smoke else SEQ_MODELS
        results["seq"] = step_bench.run({name: seq_specs[name] for name in args.seq_models},
                                        args.seq_contenders, args.seq_steps, args.repeats, log,
                                        None if args.no_memory else seq_memory)
    if "epoch" in args.only:
        from benchmarks import epoch_bench

        torch = any(name.startswith("PyTorch") for name in args.contenders)
        results["epoch"] = epoch_bench.run_epoch(specs["mlp_small"], args.epoch_steps,
                                                 args.epoch_repeats, log, torch=torch)
    if "modes" in args.only:
        from benchmarks import epoch_bench

        results["modes"] = epoch_bench.run_modes(models, args.modes_steps, args.repeats, log,
                                                 args.modes_lowering)
    if "mnist" in args.only:
        from benchmarks import mnist_bench

        results["mnist"] = mnist_bench.run(args, log)
    if "scale" in args.only:
        from benchmarks import scale_bench

        results["scale"] = scale_bench.run(models, args.steps, args.repeats, log, args.smoke)
    results["load_average_at_end"] = load_average()
    log("\n" + report.markdown(results))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return results


if __name__ == "__main__":
    main()
