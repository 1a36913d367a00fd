"""``funcnet train`` checks its arguments and paths before any work (issue 11, item 14): each user
error is one line on stderr, exit status 2 for a malformed command line and 1 for the rest, and a
traceback only with ``--debug``."""

import os
import subprocess
import sys

import pytest

from funcnet import cli, data


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if the command starts loading data."""
    loads = []
    monkeypatch.setattr(data, "load", lambda *args, **kwargs: loads.append(args) or pytest.fail("data.load ran"))
    return loads


def one_line(err):
    assert err.count("\n") == 1 and err.endswith("\n"), f"not one line: {err!r}"
    assert "Traceback" not in err
    return err


def test_a_version_tfds_does_not_have(tmp_path, no_work, capsys):
    assert cli.main(["train", "mnist:99.0.0", "--cache-dir", str(tmp_path)]) == 1
    assert one_line(capsys.readouterr().err) == (
        "funcnet: error: no version 99.0.0 of 'mnist' in this TFDS (it has 3.0.1): write 'mnist' for the newest, "
        "or mnist:3.0.1.\n")


def test_the_traceback_comes_only_with_debug(tmp_path, no_work):
    with pytest.raises(ValueError, match=r"no version 99\.0\.0 of 'mnist'"):
        cli.main(["train", "mnist:99.0.0", "--cache-dir", str(tmp_path), "--debug"])


def test_as_a_command_the_whole_output_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "funcnet", "train", "mnist:99.0.0", "--cache-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stdout == ""
    assert one_line(result.stderr).startswith("funcnet: error: no version 99.0.0 of 'mnist'")


@pytest.mark.parametrize("below", ["", "sub"])
def test_cache_dir_at_a_file(tmp_path, no_work, capsys, below):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    cache_dir = afile / below if below else afile
    assert cli.main(["train", "mnist", "--cache-dir", str(cache_dir)]) == 1
    where = "is a file" if not below else f"lies under {afile}, which is a file"
    assert one_line(capsys.readouterr().err) == (
        f"funcnet: error: --cache-dir {cache_dir} {where}, not a folder: give the folder where TFDS keeps prepared "
        "data sets (or leave --cache-dir out for ~/tensorflow_datasets).\n")
    assert afile.read_text() == "mine"


def test_out_at_an_existing_file_fails_before_training(tmp_path, no_work, capsys):
    out = tmp_path / "results.txt"
    out.write_text("last week's results")
    assert cli.main(["train", "mnist", "--cache-dir", str(tmp_path / "tfds"), "--out", str(out)]) == 1
    assert one_line(capsys.readouterr().err) == (
        f"funcnet: error: --out {out} is a file, not a folder: give a folder for the checkpoint, curves and history "
        "(a new one, or one from an earlier run).\n")
    assert out.read_text() == "last week's results"
    assert no_work == []


def test_out_holding_a_checkpoint_folder_that_is_not_one(tmp_path, no_work, capsys):
    out = tmp_path / "run"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "thesis.tex").write_text("precious")
    assert cli.main(["train", "mnist", "--cache-dir", str(tmp_path / "tfds"), "--out", str(out)]) == 1
    assert one_line(capsys.readouterr().err) == (
        f"funcnet: error: --out {out} holds {out / 'checkpoint'}, which is not a funcnet checkpoint, and funcnet "
        "would replace it: choose another --out or move it away.\n")
    assert (out / "checkpoint" / "thesis.tex").read_text() == "precious"


def test_out_where_a_history_file_is_a_folder(tmp_path, no_work, capsys):
    out = tmp_path / "run"
    (out / "history.json").mkdir(parents=True)
    assert cli.main(["train", "mnist", "--cache-dir", str(tmp_path / "tfds"), "--out", str(out)]) == 1
    assert "which is not a regular file, and funcnet would replace it" in one_line(capsys.readouterr().err)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_out_that_cannot_be_written(tmp_path, no_work, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert cli.main(["train", "mnist", "--cache-dir", str(tmp_path / "tfds"), "--out", str(locked / "run")]) == 1
    assert "cannot be created (Permission denied): choose a folder you can write to" in capsys.readouterr().err


def test_data_dir_lacking_a_file(tmp_path, no_work, capsys):
    files = tmp_path / "mnist-files"
    files.mkdir()
    (files / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert cli.main(["train", "mnist", "--cache-dir", str(tmp_path / "tfds"), "--data-dir", str(files)]) == 1
    err = one_line(capsys.readouterr().err)
    assert err.startswith(f"funcnet: error: t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, "
                          f"train-labels-idx1-ubyte.gz missing from '{files}' (--data-dir), which should hold ")


@pytest.mark.parametrize("argv, message", [
    (["train", "mnist", "--epochs", "ten"], "argument --epochs: must be a positive integer, got 'ten'"),
    (["train", "mnist", "--lr", "fast"], "argument --lr: must be a positive number, got 'fast'"),
    (["train", "mnist", "--seed", "1.5"], "argument --seed: must be an integer, got '1.5'"),
    (["train", "mnist", "--colour"], "unrecognized arguments: --colour"),
])
def test_usage_errors_are_one_line_with_status_2(argv, message, no_work, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    command = "funcnet" if "unrecognized" in message else "funcnet train"  # the top-level parser reports those
    assert one_line(capsys.readouterr().err) == f"funcnet: error: {message} (see `{command} --help`)\n"


def test_validation_split_out_of_range_is_a_usage_error(no_work, capsys):
    assert cli.main(["train", "mnist", "--validation-split", "1.5"]) == 2
    assert one_line(capsys.readouterr().err) == ("funcnet: error: --validation-split must be in [0, 1), got 1.5 "
                                                 "(see `funcnet train --help`)\n")


def test_an_unexpected_error_is_one_line_naming_its_type(tmp_path, monkeypatch, capsys):
    def broken_load(*args, **kwargs):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(data, "load", broken_load)
    argv = ["train", "mnist", "--cache-dir", str(tmp_path / "tfds"), "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 1
    assert one_line(capsys.readouterr().err) == (
        "funcnet: error: RuntimeError: disk on fire second line (run again with --debug for the traceback)\n")
    with pytest.raises(RuntimeError, match="disk on fire"):
        cli.main(argv + ["--debug"])
