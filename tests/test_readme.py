"""The README's Python code blocks run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "the README has no python example"
    namespace = {"__name__": "readme"}  # later blocks continue the earlier ones, as the text says
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)


def test_readme_starts_with_the_two_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines[2] == "```bash" and "adaptk evaluate" in lines[3] and "pytest" in lines[4]
