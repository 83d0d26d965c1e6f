import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _share_bytecode() -> str | None:
    """With PYTHONDONTWRITEBYTECODE set (as in many CI images), every Python process
    the suite starts (hundreds of ``lnpmsg node``s, CLI calls, Electrum daemons)
    compiles each module it imports from source again: about a third of a second per
    node. Instead this run keeps its bytecode in a directory of its own
    (PYTHONPYCACHEPREFIX), removed at the end, so that the source tree still gets
    no ``__pycache__``: this process writes it as it imports, the children read it.
    The directory, or None when there is nothing to do."""
    if not sys.flags.dont_write_bytecode or os.environ.get("PYTHONPYCACHEPREFIX") or sys.pycache_prefix:
        return None
    directory = tempfile.mkdtemp(prefix="lnpmsg-pycache-")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = directory
    sys.pycache_prefix = directory
    sys.dont_write_bytecode = False
    return directory


# before the imports below, so that the modules they load are cached too
_BYTECODE = _share_bytecode()

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from libsodium_modes import MODES, without_libsodium  # noqa: E402

pytest_plugins = ["lnpmsg.testing.pytest_tor"]

# Property tests check behaviour, never speed: on a loaded 2-core CI machine a
# slow example or slow input generation says nothing about the code under test.
settings.register_profile("lnpmsg", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("lnpmsg")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Spread the suite over the CPUs (pytest-xdist, ``--dist loadgroup``) a module at a
    time, so that a module's fixtures are set up once; every test on the private Tor
    network goes to one worker, which then starts one network instead of one per worker."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            group = "private-tor-network" if "private_tor_network" in getattr(item, "fixturenames", ()) else item.nodeid.split("::", 1)[0]
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_unconfigure(config: object) -> None:
    if _BYTECODE is not None:
        shutil.rmtree(_BYTECODE, ignore_errors=True)


@pytest.fixture(params=MODES, ids=lambda sodium: "libsodium" if sodium else "no libsodium")
def libsodium(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Whether libsodium handles the BOLT-8 length headers in this run of the test.

    The test runs with it (when it is there) and in the node's fallback
    without it: see tests/libsodium_modes.py.
    """
    if not request.param:
        without_libsodium(monkeypatch)
    return bool(request.param)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A node's data directory with a short path (under /tmp: the control socket's and ipc:// paths
    must fit a unix socket's ~107 bytes, which pytest's ``tmp_path`` can pass), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="lnd", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
