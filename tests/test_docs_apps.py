"""Every example in docs/apps.md is a complete program: each code block is run
as it is written (a block with a ``main`` has it awaited)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import trio

DOC = Path(__file__).resolve().parent.parent / "docs" / "apps.md"
#: blocks that start with a ``# name.py`` line are files of a multi-file example
#: (the "Testing your app" section): tests/test_docs_apps_testing.py runs those
BLOCKS = [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if not re.match(r"# [\w./-]+\.py\n", b)]


def test_the_guide_has_its_examples():
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("index", range(len(BLOCKS)))
async def test_example_runs(index, capsys):
    # Each block becomes a module, as if it were a file the reader saved and imported.
    module = types.ModuleType(f"apps_md_example_{index}")
    sys.modules[module.__name__] = module
    try:
        exec(compile(BLOCKS[index], f"docs/apps.md[{index}]", "exec", dont_inherit=True), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    main = module.__dict__.get("main")
    if main is not None:
        with trio.fail_after(60):
            await main()  # type: ignore[operator]
    out = capsys.readouterr().out
    if index == 0:
        assert out.endswith(": hi alice\n")
    if index == 1:
        assert out == "in order: True, fewer calls than messages: True\n"
    if index == 2:
        assert out == "['starting', 'gone: bye for now', 'stopping with 0 peer(s)']\n"
    if index == 4:
        assert "refused: gossip" in out and "ended: peer" in out and "disconnected" in out
    if index == 6:
        assert out == "ConnectionError: the upstream API is down (restart='never')\n"
