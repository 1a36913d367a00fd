"""The ``funcnet`` command: arguments, error paths and exit codes (the training runs themselves
are in test_mnist.py)."""

import re
import subprocess
import sys

import pytest

import funcnet as fn
from funcnet import cli


def test_python_dash_m_funcnet_shows_the_train_command():
    out = subprocess.run([sys.executable, "-m", "funcnet", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for option in ("--model {cnn,lstm,mlp}", "--epochs", "--batch-size", "--lr", "--data-dir", "--out", "--seed"):
        assert option in out.stdout


@pytest.mark.parametrize("argv, message", [
    (["train", "mnist", "--model", "rnn"], r"invalid choice: 'rnn' \(choose from 'cnn', 'lstm', 'mlp'\)"),
    (["train", "mnist", "--epochs", "0"], r"--epochs: must be a positive integer, got 0"),
    (["train", "mnist", "--lr", "-1"], r"--lr: must be a positive number, got -1"),
    (["train"], r"the following arguments are required: dataset"),
    ([], r"the following arguments are required: COMMAND"),
])
def test_bad_arguments_exit_with_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_validation_split_out_of_range(capsys):
    assert cli.main(["train", "mnist", "--validation-split", "1.5"]) == 2
    assert "--validation-split must be in [0, 1)" in capsys.readouterr().err


def test_missing_data_folder_is_a_clear_error_with_status_1(tmp_path, capsys):
    status = cli.main(["train", "mnist", "--data-dir", str(tmp_path / "nowhere"), "--cache-dir", str(tmp_path)])
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("funcnet: error: the folder ")
    assert "does not exist. It should hold t10k-images-idx3-ubyte.gz (from https://" in err


def test_unknown_data_set_suggests_a_name(tmp_path, capsys):
    assert cli.main(["train", "mnits", "--cache-dir", str(tmp_path)]) == 1
    assert "Did you mean 'mnist'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(cli.RECIPES))
def test_recipes_build_for_any_image_shape(name):
    import jax

    for shape in ((None, 28, 28, 1), (None, 32, 32, 3)):
        model = cli.build_model(name, num_classes=7, image_shape=shape[1:])
        out_shape, _, _ = model.init(jax.random.key(0), shape)
        assert out_shape == fn.spec((None, 7))
