"""Example 1: an MLP 784-256-10 on MNIST (relu, softmax cross-entropy, Adam 1e-3, batch 32).

The classic first network: flatten the 28x28 image, one hidden layer of 256 relu units, ten
logits. Run ``python examples/mnist_mlp.py`` (add ``--data-dir path/to/mnist-files`` offline);
``--train-size 5000 --epochs 1`` gives a quick run.
"""

import argparse

import jax

import funcnet as fn
from funcnet import data

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--train-size", type=int, help="train on the first N examples only")
parser.add_argument("--data-dir", help="folder with the original MNIST files (offline)")
parser.add_argument("--cache-dir", help="where TFDS keeps prepared data sets")
args = parser.parse_args()

# Images (N, 28, 28, 1) scaled to [0, 1], labels (N,) int32.
train, test = data.load("mnist", manual_dir=args.data_dir, data_dir=args.cache_dir)
x_train, y_train = train.x[: args.train_size], train.y[: args.train_size]

model = fn.Sequential([
    fn.Flatten(),                          # (N, 28, 28, 1) -> (N, 784)
    fn.Dense(256, activation="relu"),
    fn.Dense(10),                          # logits; the loss applies the softmax
])
_, params, state = model.init(jax.random.key(0), (None, 28, 28, 1))
print(fn.summary(model, (None, 28, 28, 1)))

result = fn.fit(model, params, state, x_train, y_train,
                loss="sparse_categorical_crossentropy", optimizer="adam", learning_rate=1e-3,
                epochs=args.epochs, batch_size=args.batch_size, metrics=["accuracy"],
                key=jax.random.key(1), verbose=2)

scores = fn.evaluate(model, result.params, result.state, test.x, test.y,
                     loss="sparse_categorical_crossentropy", metrics=["accuracy"])
print(f"test accuracy: {scores['accuracy']:.4f}")
