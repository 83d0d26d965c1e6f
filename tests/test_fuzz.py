"""Every decoder reached from the network, fuzzed briefly (scripts/attack.py runs them longer)."""

import pytest
from hypothesis import HealthCheck, given, settings

from lnpmsg.testing.fuzz_targets import targets

TARGETS = targets()


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_decoder_raises_only_its_documented_error(target):
    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(target.strategy)
    def run(data):
        try:
            target.run(data)
        except target.allowed:
            pass

    run()
