"""Per-commitment secrets: generation and compact storage (Appendix D vectors, parsed from the spec)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnpmsg.channels import ShachainError, ShachainStore, per_commitment_secret
from lnpmsg.channels.shachain import FIRST_INDEX

SPEC = Path(__file__).resolve().parents[2] / "shared" / "specs" / "bolts" / "03-transactions.md"
TEXT = SPEC.read_text()
GENERATION = TEXT[TEXT.index("## Generation Tests") : TEXT.index("## Storage Tests")]
STORAGE = TEXT[TEXT.index("## Storage Tests") : TEXT.index("# Appendix E")]


def _int(text: str) -> int:
    return int(text, 16) if text.startswith("0x") else int(text)


def _generation_cases() -> list[tuple[str, bytes, int, bytes]]:
    cases = []
    for block in re.split(r"\n\s*name: ", GENERATION)[1:]:
        name = block.splitlines()[0]
        seed = re.search(r"seed: 0x([0-9A-Fa-f]+)", block)
        index = re.search(r"I: (\S+)", block)
        output = re.search(r"output: 0x([0-9a-f]+)", block)
        assert seed and index and output
        cases.append((name, bytes.fromhex(seed[1]), _int(index[1]), bytes.fromhex(output[1])))
    return cases


def _storage_cases() -> list[tuple[str, list[tuple[int, bytes, bool]]]]:
    cases = []
    for block in re.split(r"\n\s*name: ", STORAGE)[1:]:
        name = block.splitlines()[0]
        steps = [
            (_int(i), bytes.fromhex(secret), result == "OK")
            for i, secret, result in re.findall(r"I: (\S+)\s+secret: 0x([0-9a-f]+)\s+output: (OK|ERROR)", block)
        ]
        cases.append((name, steps))
    return cases


GENERATION_CASES = _generation_cases()
STORAGE_CASES = _storage_cases()


def test_vectors_parsed() -> None:
    assert len(GENERATION_CASES) == 5
    assert len(STORAGE_CASES) == 9
    assert sum(not ok for _, steps in STORAGE_CASES for _, _, ok in steps) == 8


@pytest.mark.parametrize("case", GENERATION_CASES, ids=[c[0] for c in GENERATION_CASES])
def test_generation(case: tuple[str, bytes, int, bytes]) -> None:
    _, seed, index, output = case
    assert per_commitment_secret(seed, index) == output


@pytest.mark.parametrize("case", STORAGE_CASES, ids=[c[0] for c in STORAGE_CASES])
def test_storage(case: tuple[str, list[tuple[int, bytes, bool]]]) -> None:
    _, steps = case
    store = ShachainStore()
    for index, secret, ok in steps:
        if ok:
            store.insert(index, secret)
            assert store.lookup(index) == secret
        else:
            with pytest.raises(ShachainError):
                store.insert(index, secret)
            # A refused secret leaves the store unchanged: the next index is still expected.
            assert store.next_index == index


def test_storage_lookup_of_correct_sequence() -> None:
    """The correct sequence was generated from the all-FF seed; every earlier secret stays derivable."""
    _, steps = STORAGE_CASES[0]
    seed = b"\xff" * 32
    store = ShachainStore()
    for index, secret, _ in steps:
        assert per_commitment_secret(seed, index) == secret
        store.insert(index, secret)
    for index, secret, _ in steps:
        assert store.lookup(index) == secret
    with pytest.raises(ShachainError):
        store.lookup(steps[-1][0] - 1)
    assert len(store) <= 49


@settings(max_examples=25, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), start=st.integers(0, FIRST_INDEX), count=st.integers(1, 70))
def test_store_accepts_generated_sequence(seed: bytes, start: int, count: int) -> None:
    store = ShachainStore()
    indices = [i for i in range(start, start - count, -1) if i >= 0]
    for index in indices:
        store.insert(index, per_commitment_secret(seed, index))
    for index in indices:
        assert store.lookup(index) == per_commitment_secret(seed, index)
    restored = ShachainStore.restore(store.entries())
    assert restored.next_index == store.next_index
    assert all(restored.lookup(i) == store.lookup(i) for i in indices)


@settings(max_examples=25, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), other=st.binary(min_size=32, max_size=32), bad=st.integers(1, 40))
def test_wrong_secret_detected_at_next_wider_prefix(seed: bytes, other: bytes, bad: int) -> None:
    """A secret from another seed is caught no later than the next index with more trailing zeros."""
    if seed == other:
        return
    store = ShachainStore()
    bad_index = FIRST_INDEX - bad

    def zeros(i: int) -> int:
        return (i & -i).bit_length() - 1

    for index in range(FIRST_INDEX, -1, -1):
        secret = per_commitment_secret(other if index == bad_index else seed, index)
        # The bad secret is refused at once if it must derive an earlier one, else
        # at the first later index whose prefix covers it.
        must_fail = index == bad_index and any(zeros(i) < zeros(bad_index) for i in range(bad_index + 1, FIRST_INDEX + 1))
        must_fail = must_fail or (index < bad_index and zeros(index) > zeros(bad_index))
        if must_fail:
            with pytest.raises(ShachainError):
                store.insert(index, secret)
            return
        store.insert(index, secret)
    raise AssertionError("the wrong secret was never detected")


@settings(max_examples=100, deadline=None)
@given(index=st.integers(-(2**50), 2**50), secret=st.binary(max_size=40))
def test_bad_input_raises_shachain_error(index: int, secret: bytes) -> None:
    store = ShachainStore()
    try:
        store.insert(index, secret)
    except ShachainError:
        return
    assert 0 <= index <= FIRST_INDEX and len(secret) == 32


def test_out_of_order_insert_rejected() -> None:
    seed = bytes(32)
    store = ShachainStore()
    store.insert(FIRST_INDEX, per_commitment_secret(seed, FIRST_INDEX))
    with pytest.raises(ShachainError):
        store.insert(FIRST_INDEX - 2, per_commitment_secret(seed, FIRST_INDEX - 2))
    with pytest.raises(ShachainError):
        per_commitment_secret(seed, FIRST_INDEX + 1)
