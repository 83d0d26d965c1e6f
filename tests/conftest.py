from hypothesis import HealthCheck, settings

pytest_plugins = ["lnpmsg.testing.pytest_tor"]

# Property tests check behaviour, never speed: on a loaded 2-core CI machine a
# slow example or slow input generation says nothing about the code under test.
settings.register_profile("lnpmsg", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("lnpmsg")
