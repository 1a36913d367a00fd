"""Preparing a data set shows funcnet's one line and one progress bar, not TFDS's banners, ~100
lines of bars and absl warnings (issue 11, item 9)."""

import io
import logging
import re

import pytest

from funcnet import data
from funcnet._quiet_tfds import quiet_preparation

LINE = "funcnet: preparing mnist once from the original files in /files"


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def shown(text):
    """The distinct lines a terminal would show: tqdm rewrites its line with carriage returns."""
    return [line for line in re.split(r"[\r\n]", text) if line.strip()]


def test_tfds_chatter_is_replaced_by_one_line_and_one_bar(capsys):
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    records = Records()
    logging.getLogger("absl").addHandler(records)
    original_tqdm = tfds.core.utils.tqdm
    stream = io.StringIO()
    try:
        with quiet_preparation(tfds, LINE, stream=stream):
            # What TFDS does while preparing: a banner on stdout, an absl warning, bars.
            print("Downloading and preparing dataset Unknown size (download: Unknown size, ...)")
            absl_logging.warning("Variant folder /tmp/x has no dataset_info.json")
            with tfds.core.utils.async_tqdm(total=1, desc="Dl Completed...") as downloads:
                downloads.update(1)
            for _ in tfds.core.utils.tqdm(range(2), desc="Generating splits..."):
                assert sum(1 for _ in tfds.core.utils.tqdm(range(3), desc="Generating train examples...")) == 3
            assert list(tfds.core.utils.tqdm(range(4), desc="Shuffling mnist-train.tfrecord...")) == [0, 1, 2, 3]
    finally:
        logging.getLogger("absl").removeHandler(records)

    assert capsys.readouterr() == ("", "")
    assert records.messages == []
    lines = shown(stream.getvalue())
    assert lines[0] == LINE
    assert all(line.startswith("  examples written: ") for line in lines[1:]), lines
    assert re.match(r"  examples written: 6 examples \[", lines[-1]), lines[-1]
    # Afterwards TFDS is as it was.
    assert tfds.core.utils.tqdm is original_tqdm
    assert not isinstance(tfds.core.utils.tqdm(range(1), disable=True), tfds.core.utils.EmptyTqdm)
    absl_logging.warning("visible again")


@pytest.mark.slow
def test_preparing_mnist_from_the_original_files_prints_one_line_and_one_bar(tmp_path, mnist_dir, capfd):
    data.prepare("mnist", data_dir=tmp_path / "tfds", manual_dir=mnist_dir, download=False)
    out, err = capfd.readouterr()
    assert out == ""
    lines = shown(err)
    assert lines[0] == f"funcnet: preparing mnist once from the original files in {mnist_dir}"
    assert all(line.startswith("  examples written: ") for line in lines[1:]), [
        line for line in lines[1:] if not line.startswith("  examples written: ")][:5]
    assert re.match(r"  examples written: 70000 examples \[", lines[-1]), lines[-1]
    assert "ownload" not in err
