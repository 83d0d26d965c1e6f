"""The examples in docs/apps.md run as they are written, so the docs cannot rot.

Each section's Python blocks start with a ``# file.py`` line; they are
written to a fresh directory under those names and run there with pytest in
a separate interpreter, as a reader would run them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "apps.md"


def section(title: str) -> str:
    """The text of one ``## title`` section of docs/apps.md."""
    text = DOC.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"docs/apps.md has no section {title!r}"
    return match.group(1)


def code_files(text: str) -> dict[str, str]:
    """The ``python`` blocks of ``text`` by the file name on their first line."""
    files = {}
    for block in re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        first = block.splitlines()[0]
        assert re.fullmatch(r"# [\w.]+\.py", first), f"a python block must start with '# name.py', not {first!r}"
        files[first[2:]] = block
    return files


def test_the_testing_section_runs_as_written(tmp_path: Path) -> None:
    files = code_files(section("Testing your app"))
    assert set(files) == {"greeter.py", "test_greeter.py"}
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
