"""The README's Python examples run as printed (in one namespace, in order: the second reuses the
first's imports and `free_port`), with the `secagg` binary on PATH for the agents."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_python_examples_run(secagg_bin, monkeypatch):
    section = README.read_text().split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    # The adapter's switch (`install()`) needs Fed-BioMed: its own tests cover it.
    section = section.split("\n### The Fed-BioMed adapter", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2, "the Python section has two examples"
    monkeypatch.setenv("PATH", f"{secagg_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    namespace = {"__name__": "readme"}
    outputs = []
    for i, block in enumerate(blocks):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, f"README.md (Python example {i + 1})", "exec"), namespace)
        outputs.append(out.getvalue().strip())
    average = [float(x) for x in outputs[0].strip("[]").split(",")]
    assert abs(average[0] - 1.0) < 1e-3 and abs(average[1] + 0.5) < 1e-3, average
    assert outputs[1] == "['confirmed', 'confirmed', 'confirmed']", outputs[1]
