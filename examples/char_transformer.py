"""Example 8: a character-level causal transformer on fortune cookies, against a bigram and an LSTM.

Trains three language models on the first 90% of ``../shared/data/text/fortunes.txt`` and reports
each one's bits per character on the last 10%: a character bigram (add-k smoothed counts, NumPy),
an LSTM of about the transformer's size, and the transformer (Embedding + PositionalEmbedding +
TransformerDecoderBlock x N + LayerNorm + Dense). Each network trains for ``--time-budget``
seconds of wall time (compilation included) with Adam, its learning rate decaying with the time
spent; then the transformer writes a few fortunes with ``fn.generate``. Run
``python examples/char_transformer.py`` (about 15 minutes on two CPU cores).
"""

import argparse
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import funcnet as fn

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "fortunes.txt"

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--time-budget", type=float, default=300, help="training seconds per network")
parser.add_argument("--data", default=str(DATA), help="the text file")
parser.add_argument("--context", type=int, default=128, help="characters per training window")
parser.add_argument("--width", type=int, default=96, help="the transformer's width")
parser.add_argument("--layers", type=int, default=2, help="transformer blocks")
parser.add_argument("--heads", type=int, default=4)
parser.add_argument("--lstm-units", type=int, help="default: about the transformer's parameter count")
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
parser.add_argument("--max-steps", type=int, help="stop after N steps even within the budget (quick runs)")
parser.add_argument("--max-chars", type=int, help="use only the first N characters of the text (quick runs)")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

# ---- data: characters (bytes: the text is ASCII but for a few UTF-8 letters) as ids; the last 10% held out
text = np.frombuffer(pathlib.Path(args.data).read_bytes()[: args.max_chars], np.uint8)
vocab = np.unique(text)                                       # the distinct bytes, id i <-> byte vocab[i]
ids = np.searchsorted(vocab, text).astype(np.int32)
split = int(len(ids) * 0.9)
train_ids, valid_ids = ids[:split], ids[split:]
print(f"{len(text):,} characters, {len(vocab)} distinct; train {len(train_ids):,}, validation {len(valid_ids):,}")


def decode(row):
    return bytes(vocab[row]).decode("utf-8", errors="replace")


def bigram_bits(k):
    """Validation bits per character of add-k smoothed bigram counts from the training text."""
    counts = np.zeros((len(vocab), len(vocab)))
    np.add.at(counts, (train_ids[:-1], train_ids[1:]), 1)
    probs = (counts + k) / (counts + k).sum(axis=1, keepdims=True)
    return -np.log2(probs[valid_ids[:-1], valid_ids[1:]]).mean()


# ---- the validation windows every network is scored on: non-overlapping, each from a fresh state
windows = (len(valid_ids) - 1) // args.context
valid_x = valid_ids[: windows * args.context].reshape(windows, args.context)
valid_y = valid_ids[1: windows * args.context + 1].reshape(windows, args.context)


def validation_bits(model, params, state):
    """The mean cross-entropy over every validation character, in bits."""
    scores = fn.evaluate(model, params, state, valid_x, valid_y, loss="sparse_categorical_crossentropy",
                         batch_size=64)
    return float(scores["loss"]) / math.log(2)


def train(model, name, key):
    """Adam on random training windows for ``--time-budget`` seconds (or ``--max-steps``); the learning
    rate follows a cosine of the elapsed fraction of the budget, after a 3% warm-up."""
    _, params, state = model.init(key, fn.spec((None, args.context), "int32"))
    print(f"\n{name}: {fn.count_params(params):,} parameters")
    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)
    step = fn.make_train_step(model, "sparse_categorical_crossentropy", optimizer)
    opt_state = fn.training.init_opt_state(params, optimizer)
    rng = np.random.default_rng(args.seed)
    started, steps, losses = time.perf_counter(), 0, []
    while (fraction := max((elapsed := time.perf_counter() - started) / args.time_budget,
                           steps / args.max_steps if args.max_steps else 0.0)) < 1:
        rate = args.lr * min(1.0, fraction / 0.03) * 0.5 * (1 + math.cos(math.pi * fraction))
        opt_state = optax.tree.set(opt_state, learning_rate=jnp.float32(rate))
        starts = rng.integers(0, len(train_ids) - args.context - 1, args.batch_size)
        batch = train_ids[starts[:, None] + np.arange(args.context + 1)]
        params, state, opt_state, logs = step(params, state, opt_state, (batch[:, :-1], batch[:, 1:]),
                                              jax.random.fold_in(key, steps))
        losses.append(float(logs["loss"]))  # waits for the step, so the clock counts its compute
        steps += 1
        if steps % 100 == 0:
            print(f"  step {steps}, {elapsed:.0f}s: training loss {float(np.mean(losses[-100:])):.3f} nats", flush=True)
    bits = validation_bits(model, params, state)
    print(f"  {steps} steps in {time.perf_counter() - started:.0f}s; validation {bits:.3f} bits per character")
    return params, state, bits


# ---- the three models
smoothing = min((0.01, 0.03, 0.1, 0.3, 1.0), key=bigram_bits)
print(f"\nbigram (add-{smoothing:g} smoothing, the best of five values): validation {bigram_bits(smoothing):.3f} "
      "bits per character")
results = {"bigram": bigram_bits(smoothing)}

transformer = fn.serial(
    fn.Embedding(len(vocab), args.width),                     # (N, T) ids -> (N, T, width)
    fn.PositionalEmbedding(args.context),                     # + a learned vector per position
    *[fn.TransformerDecoderBlock(args.heads, 4 * args.width) for _ in range(args.layers)],  # causal
    fn.LayerNorm(),
    fn.Dense(len(vocab), rank=3),                             # -> (N, T, vocab) logits
)
transformer_size = fn.count_params(transformer.init(jax.random.key(0), fn.spec((None, args.context), "int32"))[1])
# An LSTM of about the same size: 4 u (64 + u + 1) + u vocab + 65 vocab = transformer_size, solved for u.
b = 4 * 64 + len(vocab) + 4
units = args.lstm_units or int((-b + math.sqrt(b * b + 16 * (transformer_size - 65 * len(vocab)))) / 8)
lstm = fn.serial(fn.Embedding(len(vocab), 64), fn.LSTM(units, return_sequences=True), fn.Dense(len(vocab), rank=3))

_, _, results["lstm"] = train(lstm, f"LSTM({units})", jax.random.key(args.seed + 1))
params, state, results["transformer"] = train(transformer, f"transformer ({args.layers} blocks, width {args.width})",
                                              jax.random.key(args.seed + 2))

print("\nvalidation bits per character: " + ", ".join(f"{k} {v:.3f}" for k, v in results.items()))

# ---- samples: each continues the first characters of a validation fortune
prompt_length = 16
starts = [i + 2 for i in np.flatnonzero(valid_ids[:-prompt_length - 2] == np.searchsorted(vocab, ord("%")))[:3]]
prompts = np.stack([valid_ids[s:s + prompt_length] for s in starts])
tokens = fn.generate(transformer, params, state, prompts, args.context - prompt_length, jax.random.key(args.seed),
                     temperature=0.8, top_k=20)
for row in np.asarray(tokens):
    print(f"\n--- sample: {decode(row[:prompt_length])} | {decode(row[prompt_length:])}")
