"""Example 5: a binary classifier on scikit-learn's breast-cancer data, reporting accuracy and F1.

Two hidden relu layers and a sigmoid output, trained with Adam on binary cross-entropy over
probabilities (569 tumours, 30 features each; 1 = benign). Needs scikit-learn
(``pip install scikit-learn``), which ships the data: no download. Run
``python examples/breast_cancer.py``.
"""

import argparse

import jax
import numpy as np

import funcnet as fn
from funcnet.losses import get_loss

try:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
except ImportError:
    raise SystemExit("This example needs scikit-learn: pip install scikit-learn") from None

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=50)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

features, labels = load_breast_cancer(return_X_y=True)
x_train, x_test, y_train, y_test = train_test_split(
    features.astype(np.float32), labels.astype(np.float32), test_size=0.25, stratify=labels,
    random_state=args.seed)
mean, std = x_train.mean(axis=0), x_train.std(axis=0)   # standardise with training statistics
x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

model = fn.Sequential([
    fn.Dense(16, activation="relu"),
    fn.Dense(8, activation="relu"),
    fn.Dense(1, activation="sigmoid"),     # (N, 1) probabilities of "benign"
])
_, params, state = model.init(jax.random.key(args.seed), (None, 30))

# Binary cross-entropy on probabilities; accuracy and F1 then threshold them at 0.5.
loss = get_loss("binary_crossentropy", from_logits=False)
result = fn.fit(model, params, state, x_train, y_train, loss=loss, optimizer="adam",
                learning_rate=1e-3, epochs=args.epochs, batch_size=args.batch_size,
                metrics=["accuracy", "f1"], key=jax.random.key(args.seed + 1), verbose=0)
print(f"trained {args.epochs} epochs: loss {result.history['loss'][-1]:.4f}, "
      f"accuracy {result.history['accuracy'][-1]:.4f}")

scores = fn.evaluate(model, result.params, result.state, x_test, y_test, loss=loss,
                     metrics=["accuracy", "f1"])
print(f"test accuracy: {scores['accuracy']:.4f}")
print(f"test F1: {scores['f1']:.4f}")
