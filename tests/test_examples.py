"""Every example script runs end to end on real data (short runs) and reaches a meaningful metric.

The MNIST examples train one epoch on a subset of the training set and are evaluated on the whole
test set; chance is 10%, so the thresholds catch any broken piece of the pipeline. Example 6's
CIFAR-10 is not available offline: its "data absent" path must explain and exit with status 0.
"""

import math
import pathlib
import re
import subprocess
import sys

import pytest

from tests.mnist_cache import mnist_data_dir  # noqa: F401  (fixture)

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"

#: script -> (arguments of the short run, the lowest acceptable test accuracy)
MNIST_RUNS = {
    "mnist_mlp.py": (["--epochs", "1", "--train-size", "15000"], 0.90),
    "mnist_mlp_rmsprop.py": (["--epochs", "1", "--train-size", "20000"], 0.90),
    "mnist_cnn.py": (["--epochs", "1", "--train-size", "8000"], 0.85),
    "mnist_cnn_sgd.py": (["--epochs", "1", "--train-size", "8000"], 0.85),
    "mnist_lstm.py": (["--epochs", "2", "--train-size", "10000", "--lr", "5e-3"], 0.85),
}


def run(script, *args, timeout=600):
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def metric(output, name):
    return float(re.search(rf"^test {name}: (\d\.\d+)$", output, re.MULTILINE).group(1))


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(MNIST_RUNS))
def test_mnist_example(script, mnist_dir, mnist_data_dir):
    args, threshold = MNIST_RUNS[script]
    output = run(script, *args, "--data-dir", mnist_dir, "--cache-dir", mnist_data_dir)
    accuracy = metric(output, "accuracy")
    print(f"{script}: test accuracy {accuracy:.4f}")
    assert accuracy >= threshold


@pytest.mark.slow
def test_breast_cancer_example():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    output = run("breast_cancer.py", "--seed", 0)
    accuracy, f1 = metric(output, "accuracy"), metric(output, "F1")

    # The reference: scikit-learn's logistic regression on the example's split (seed 0).
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    predicted = make_pipeline(StandardScaler(), LogisticRegression()).fit(x_train, y_train).predict(x_test)
    ref_accuracy, ref_f1 = accuracy_score(y_test, predicted), f1_score(y_test, predicted)
    print(f"breast_cancer.py: test accuracy {accuracy:.4f}, F1 {f1:.4f} (logistic regression: "
          f"{ref_accuracy:.4f}, {ref_f1:.4f})")
    # 143 test tumours: allow the MLP five more mistakes than the linear model.
    assert accuracy >= ref_accuracy - 5 / 143
    assert f1 >= ref_f1 - 0.04


def test_cifar10_example_without_the_data_explains_and_exits_cleanly(tmp_path):
    empty = tmp_path / "files"
    empty.mkdir()
    output = run("cifar10_cnn.py", "--data-dir", empty, "--cache-dir", tmp_path / "cache")
    assert "CIFAR-10 is not available here: cifar-10-binary.tar.gz missing from" in output
    assert "download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in output
    assert "--data-dir <the folder holding cifar-10-binary.tar.gz>" in output
    assert "test accuracy" not in output


def test_examples_readme_lists_every_script():
    readme = (EXAMPLES / "README.md").read_text()
    for script in sorted(EXAMPLES.glob("*.py")):
        assert f"`{script.name}`" in readme


def test_char_transformer_runs_at_a_tiny_size():
    """60 steps on 60,000 characters: the script runs end to end and each network learns something
    (beats the uniform distribution; the transformer beating the bigram and the LSTM takes minutes, so it is
    measured at the full size, in the examples README)."""
    output = run("char_transformer.py", "--time-budget", 120, "--max-steps", 60, "--max-chars", 60000,
                 "--width", 32, "--layers", 1, "--heads", 2, "--context", 32, "--batch-size", 16)
    vocab = int(re.search(r"characters, (\d+) distinct", output).group(1))
    figures = re.search(r"^validation bits per character: bigram (\S+), lstm (\S+), transformer (\S+)$", output,
                        re.MULTILINE)
    bigram, lstm, transformer = (float(v) for v in figures.groups())
    print(f"char_transformer.py: bigram {bigram}, lstm {lstm}, transformer {transformer} bits per character")
    for bits in (bigram, lstm, transformer):
        assert 0 < bits < math.log2(vocab)
    assert output.count("--- sample: ") == 3
