"""The README's and the documentation's Python code blocks run as written.

Only blocks fenced as ```python run; blocks fenced ```py (same highlighting) are illustrations
that need something a test cannot have (internet, a local path). The blocks of one page run in
order, in one namespace, from the repository root, like a reader pasting them into a session
(the README in a fresh interpreter, the documentation pages in the test's).
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from tests.mnist_cache import mnist_data_dir  # noqa: F401  (fixture)

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC_PAGES = sorted(p for p in (ROOT / "docs").rglob("*.md") if "```python\n" in p.read_text())

RUNNER = """
import re, sys
text = open(sys.argv[1]).read()
for i, block in enumerate(re.findall(r"^```python\\n(.*?)^```", text, re.M | re.S)):
    exec(compile(block, f"{sys.argv[1]} (python block {i + 1})", "exec"), globals())
"""


def python_blocks(text):
    return re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)


def run_page(path, env=None):
    result = subprocess.run([sys.executable, "-c", RUNNER, str(path)], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}, timeout=900)
    assert result.returncode == 0, f"{path.name}: a code block failed\n{result.stderr[-4000:]}"
    return result.stdout


def test_the_extractor_finds_python_blocks_only():
    text = "```python\na = 1\n```\n\n```py\nnot run\n```\n\n```sh\nmake\n```\n```python\nb = 2\n```\n"
    assert python_blocks(text) == ["a = 1\n", "b = 2\n"]


@pytest.mark.slow
def test_readme_code_runs(mnist_data_dir):
    readme = ROOT / "README.md"
    assert python_blocks(readme.read_text()), "the README has no python code block"
    # The quickstart loads MNIST: point TFDS at the data prepared once for the test run.
    run_page(readme, env={"TFDS_DATA_DIR": str(mnist_data_dir)})


@pytest.mark.slow
@pytest.mark.parametrize("page", DOC_PAGES, ids=[str(p.relative_to(ROOT / "docs")) for p in DOC_PAGES])
def test_documentation_code_runs(page, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    namespace = {"__name__": "__docs__"}
    for i, block in enumerate(python_blocks(page.read_text())):
        exec(compile(block, f"{page.name} (python block {i + 1})", "exec"), namespace)
