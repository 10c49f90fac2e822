"""The README's Python example runs as printed."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_python_example_runs():
    section = README.read_text().split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Python section has one example"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], "README.md (Python example)", "exec"), {"__name__": "readme"})
    average = [float(x) for x in out.getvalue().strip().strip("[]").split(",")]
    assert abs(average[0] - 1.0) < 1e-3 and abs(average[1] + 0.5) < 1e-3, average
