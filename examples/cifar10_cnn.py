"""Example 6: a CNN on CIFAR-10 (32x32 colour images) via TensorFlow Datasets.

Conv32-MaxPool-Conv64-MaxPool-Flatten-Dense128-Dense10 with Adam. With internet the data set is
downloaded on the first run (163 MiB); offline, pass the folder holding
``cifar-10-binary.tar.gz`` as ``--data-dir``. When the data is not available the script says how
to get it and exits with status 0 without training.
"""

import argparse

import jax

import funcnet as fn
from funcnet import data

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--train-size", type=int, help="train on the first N examples only")
parser.add_argument("--data-dir", help="folder holding cifar-10-binary.tar.gz (offline)")
parser.add_argument("--cache-dir", help="where TFDS keeps prepared data sets")
args = parser.parse_args()

try:
    train, test = data.load("cifar10", manual_dir=args.data_dir, data_dir=args.cache_dir)
except (FileNotFoundError, ConnectionError) as error:
    files = data.info("cifar10").files
    print(f"CIFAR-10 is not available here: {error}\n")
    print("To run this example, either connect to the internet (the data set downloads itself), or")
    for name, url in files.items():
        print(f"  download {url}\n"
              f"  and run: python examples/cifar10_cnn.py --data-dir <the folder holding {name}>")
    raise SystemExit(0)

model = fn.Sequential([
    fn.Conv2D(32, 3, activation="relu"),   # (N, 32, 32, 3) -> (N, 30, 30, 32)
    fn.MaxPool2D(2),                       # -> (N, 15, 15, 32)
    fn.Conv2D(64, 3, activation="relu"),   # -> (N, 13, 13, 64)
    fn.MaxPool2D(2),                       # -> (N, 6, 6, 64)
    fn.Flatten(),
    fn.Dense(128, activation="relu"),
    fn.Dense(10),
])
_, params, state = model.init(jax.random.key(0), (None, 32, 32, 3))
print(fn.summary(model, (None, 32, 32, 3)))

result = fn.fit(model, params, state, train.x[: args.train_size], train.y[: args.train_size],
                loss="sparse_categorical_crossentropy", optimizer="adam", learning_rate=1e-3,
                epochs=args.epochs, batch_size=args.batch_size, metrics=["accuracy"],
                key=jax.random.key(1), verbose=2)

scores = fn.evaluate(model, result.params, result.state, test.x, test.y,
                     loss="sparse_categorical_crossentropy", metrics=["accuracy"])
print(f"test accuracy: {scores['accuracy']:.4f}")
