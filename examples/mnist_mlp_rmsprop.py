"""Example 2: an MLP 784-512-512-10 on MNIST with RMSprop and one-hot labels (batch 128).

The Keras ``mnist_mlp`` tutorial: two hidden layers of 512 relu units with dropout 0.2, trained
with RMSprop on categorical cross-entropy, so the labels are one-hot rows ``(N, 10)``. Run
``python examples/mnist_mlp_rmsprop.py`` (``--data-dir path/to/mnist-files`` offline).
"""

import argparse

import jax
import numpy as np

import funcnet as fn
from funcnet import data

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--train-size", type=int, help="train on the first N examples only")
parser.add_argument("--data-dir", help="folder with the original MNIST files (offline)")
parser.add_argument("--cache-dir", help="where TFDS keeps prepared data sets")
args = parser.parse_args()

train, test = data.load("mnist", manual_dir=args.data_dir, data_dir=args.cache_dir)
x_train = train.x[: args.train_size].reshape(-1, 784)          # flat vectors, as in the tutorial
x_test = test.x.reshape(-1, 784)
y_train = np.eye(10, dtype=np.float32)[train.y[: args.train_size]]     # one-hot (N, 10)
y_test = np.eye(10, dtype=np.float32)[test.y]

model = fn.Sequential([
    fn.Dense(512, activation="relu"),
    fn.Dropout(0.2),                       # only in training: fit gives it a fresh key per step
    fn.Dense(512, activation="relu"),
    fn.Dropout(0.2),
    fn.Dense(10),
])
_, params, state = model.init(jax.random.key(0), (None, 784))
print(fn.summary(model, (None, 784)))

result = fn.fit(model, params, state, x_train, y_train,
                loss="categorical_crossentropy", optimizer="rmsprop", learning_rate=1e-3,
                epochs=args.epochs, batch_size=args.batch_size, metrics=["accuracy"],
                key=jax.random.key(1), verbose=2)

scores = fn.evaluate(model, result.params, result.state, x_test, y_test,
                     loss="categorical_crossentropy", metrics=["accuracy"])
print(f"test accuracy: {scores['accuracy']:.4f}")
