"""The README's and the documentation's Python code blocks run as written, and the README's
figures are what its code prints.

Only blocks fenced as ```python run; blocks fenced ```py (same highlighting) are illustrations
that need something a test cannot have (internet, a local path). The blocks of one page run in
order, in one namespace, from the repository root, like a reader pasting them into a session
(the README in a fresh interpreter, the documentation pages in the test's).

In the README, what a ``print(...)`` line shows is written in its trailing comment, and a ```text
block right after a python block is that block's whole output. Both are compared with what the
code printed: ``...`` stands for anything, and a figure written ``~X`` matches a printed number
within ``TOLERANCE`` of X (runs differ by a few thousandths between machines, library versions
and the order of random draws).
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from tests.mnist_cache import mnist_data_dir  # noqa: F401  (fixture)

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC_PAGES = sorted(p for p in (ROOT / "docs").rglob("*.md") if "```python\n" in p.read_text())
TOLERANCE = 0.03
NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"

RUNNER = """
import json, re, sys
text = open(sys.argv[1]).read()
printed = []  # [block index, line in the block, text], for every print() the blocks call


def recording_print(*args, sep=" ", end="\\n", file=None, flush=False):
    __builtins__.print(*args, sep=sep, end=end, file=file, flush=flush)
    caller = sys._getframe(1).f_code.co_filename
    if file is None and caller.startswith("python block "):
        printed.append([int(caller.split()[-1]) - 1, sys._getframe(1).f_lineno, sep.join(map(str, args)) + end])


print = recording_print
for i, block in enumerate(re.findall(r"^```python\\n(.*?)^```", text, re.M | re.S)):
    exec(compile(block, f"python block {i + 1}", "exec"), globals())
if len(sys.argv) > 2:
    with open(sys.argv[2], "w") as f:
        json.dump(printed, f)
"""


def python_blocks(text):
    return re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def quoted_outputs(text):
    """What the page says its code prints: ``(block index, line in block or None, page line, expected)``.

    A print line's trailing comment is that line's output; a ```text block directly after a python
    block (line None) is the block's whole output.
    """
    quotes = []
    for i, block in enumerate(re.finditer(r"^```python\n(.*?)^```\n", text, re.MULTILINE | re.DOTALL)):
        first_line = text.count("\n", 0, block.start(1)) + 1
        for n, line in enumerate(block.group(1).splitlines(), 1):
            comment = re.match(r"^\s*print\(.*\)\s+# (.*)$", line)
            if comment:
                quotes.append((i, n, first_line + n - 1, comment.group(1)))
        after = re.match(r"\s*```text\n(.*?)^```", text[block.end():], re.MULTILINE | re.DOTALL)
        if after:
            quotes.append((i, None, text.count("\n", 0, block.end() + after.start(1)) + 1, after.group(1)))
    return quotes


def matches(expected, printed):
    """Whether ``printed`` is ``expected``, with ``...`` matching anything and ``~X`` a number near X."""
    pattern, figures = "", []
    for part in re.split(rf"(\.\.\.|~{NUMBER})", expected.strip()):
        if part == "...":
            pattern += ".*?"
        elif re.fullmatch(f"~{NUMBER}", part):
            pattern += f"({NUMBER})"
            figures.append(float(part[1:]))
        else:
            pattern += re.escape(part)
    found = re.fullmatch(pattern, printed.strip(), re.DOTALL)
    return found is not None and all(abs(float(got) - want) <= TOLERANCE for got, want in zip(found.groups(), figures))


def run_page(path, env=None, record=None):
    args = [sys.executable, "-c", RUNNER, str(path)] + ([str(record)] if record else [])
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}, timeout=900)
    assert result.returncode == 0, f"{path.name}: a code block failed\n{result.stderr[-4000:]}"
    return result.stdout


def test_the_extractor_finds_python_blocks_only():
    text = "```python\na = 1\n```\n\n```py\nnot run\n```\n\n```sh\nmake\n```\n```python\nb = 2\n```\n"
    assert python_blocks(text) == ["a = 1\n", "b = 2\n"]


def test_figures_match_within_the_tolerance_and_nothing_else():
    assert matches("{'accuracy': ~0.92, 'f1': ..., 'loss': ~0.28}", "{'accuracy': 0.9224, 'f1': 0.92, 'loss': 0.2846}")
    assert not matches("{'accuracy': ~0.96, 'f1': ...}", "{'accuracy': 0.9224, 'f1': 0.92}")
    assert not matches("{'loss': ..., 'accuracy': ~0.92}", "{'accuracy': 0.9224, 'loss': 0.28}")
    assert matches("(2, 10)", "(2, 10)\n") and not matches("(2, 10)", "(2, 11)")


def test_quoted_outputs_are_found_on_print_lines_and_in_text_blocks():
    text = ("```python\nx = 1  # not a print\nprint(x)  # 1\n```\n\n```text\n1\n```\n"
            "```python\nprint(2)\n```\n")
    assert quoted_outputs(text) == [(0, 2, 3, "1"), (0, None, 7, "1\n")]


def test_every_figure_in_the_readme_code_is_checked():
    """A figure written ~X must be on a print line, where the test compares it with the output."""
    for block in python_blocks((ROOT / "README.md").read_text()):
        for line in block.splitlines():
            if re.search(rf"~{NUMBER}|\d%", line):
                assert re.match(r"^\s*print\(.*\)\s+# ", line), f"a figure the test cannot check: {line!r}"


@pytest.mark.slow
def test_readme_code_runs_and_prints_what_the_readme_says(mnist_data_dir, tmp_path):
    readme = ROOT / "README.md"
    text = readme.read_text()
    assert python_blocks(text), "the README has no python code block"
    # The quickstart loads MNIST: point TFDS at the data prepared once for the test run.
    run_page(readme, env={"TFDS_DATA_DIR": str(mnist_data_dir)}, record=tmp_path / "printed.json")
    printed = json.loads((tmp_path / "printed.json").read_text())
    quotes = quoted_outputs(text)
    assert quotes, "the README quotes no output"
    wrong = []
    for block, line, page_line, expected in quotes:
        got = "".join(t for b, n, t in printed if b == block and (line is None or n == line))
        if not matches(expected, got):
            wrong.append(f"README.md line {page_line} says {expected.strip()!r}, the code printed {got.strip()!r}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.slow
@pytest.mark.parametrize("page", DOC_PAGES, ids=[str(p.relative_to(ROOT / "docs")) for p in DOC_PAGES])
def test_documentation_code_runs(page, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    namespace = {"__name__": "__docs__"}
    for i, block in enumerate(python_blocks(page.read_text())):
        exec(compile(block, f"{page.name} (python block {i + 1})", "exec"), namespace)  # noqa: S102 (the docs' own code)
