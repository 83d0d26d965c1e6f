"""The test suite's own fixtures: none that pytest-trio would silently skip.

pytest-trio runs only the async fixtures a test names as arguments (and
theirs): an ``autouse`` async fixture is never run, setup nor teardown
(python-trio/pytest-trio#123), so what it was to clean up leaks quietly
(e.g. client sockets left open until the interpreter exits).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*(ROOT / "tests").glob("*.py"), *(ROOT / "lnpmsg" / "testing").glob("*.py")])


def autouse_async_fixtures(source: str) -> list[str]:
    """Names of the async functions in ``source`` decorated ``pytest.fixture(..., autouse=True)``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("fixture"):
                if any(k.arg == "autouse" and isinstance(k.value, ast.Constant) and k.value.value for k in decorator.keywords):
                    found.append(node.name)
    return found


def test_no_async_fixture_is_autouse() -> None:
    offenders = [f"{path.relative_to(ROOT)}: {name}" for path in SOURCES for name in autouse_async_fixtures(path.read_text())]
    assert not offenders, f"pytest-trio never runs these (name them in the tests instead): {offenders}"


def test_the_check_sees_an_autouse_async_fixture() -> None:
    source = (
        "import pytest\n"
        "@pytest.fixture(autouse=True)\nasync def cleanup():\n    yield\n"
        "@pytest.fixture\nasync def named():\n    yield\n"
        "@pytest.fixture(autouse=True)\ndef plain():\n    yield\n"
    )
    assert autouse_async_fixtures(source) == ["cleanup"]
