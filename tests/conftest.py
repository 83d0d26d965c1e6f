import pytest
from hypothesis import HealthCheck, settings
from libsodium_modes import MODES, without_libsodium

pytest_plugins = ["lnpmsg.testing.pytest_tor"]

# Property tests check behaviour, never speed: on a loaded 2-core CI machine a
# slow example or slow input generation says nothing about the code under test.
settings.register_profile("lnpmsg", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("lnpmsg")


@pytest.fixture(params=MODES, ids=lambda sodium: "libsodium" if sodium else "no libsodium")
def libsodium(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Whether libsodium handles the BOLT-8 length headers in this run of the test.

    The test runs with it (when it is there) and in the node's fallback
    without it: see tests/libsodium_modes.py.
    """
    if not request.param:
        without_libsodium(monkeypatch)
    return bool(request.param)
