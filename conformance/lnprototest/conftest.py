"""pytest set-up for lnprototest-style tests: ``--runner`` names the runner
class (default: lnpmsg's), ``--runner-args`` extra node options, as in
lnprototest's own suite, so that these tests also run against Core
Lightning (``--runner=lnprototest.clightning.Runner``)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest

DEFAULT_RUNNER = "lnpmsg.testing.lnprototest_runner.Runner"


def pytest_addoption(parser: Any) -> None:
    parser.addoption("--runner", action="store", default=DEFAULT_RUNNER, help="runner class, module.Class (default: %(default)s)")
    parser.addoption("--runner-args", action="append", default=[], help="option for the node under test, without '--'; repeatable")


@pytest.fixture
def runner(pytestconfig: Any) -> Iterator[Any]:
    module, _, name = pytestconfig.getoption("runner").rpartition(".")
    instance = getattr(importlib.import_module(module), name)(pytestconfig)
    yield instance
    if instance.is_running():
        instance.stop(print_logs=True)
    instance.teardown()
