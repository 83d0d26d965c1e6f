"""BOLT-8 Appendix A, parsed from the spec text at test time: every initiator and
responder case (successes and failures) and the key-rotation vectors."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lnpmsg.noise import (
    FrameScratch,
    HandshakeError,
    InitiatorHandshake,
    MessageDecryptor,
    MessageEncryptor,
    ResponderHandshake,
    public_key_of,
)
from lnpmsg.noise._primitives import hkdf_pair

SPEC = Path(__file__).resolve().parents[2] / "shared" / "specs" / "bolts" / "08-transport.md"


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n#", start + len(heading) + 5)
    return text[start : len(text) if end < 0 else end]


def _hex(value: str) -> bytes:
    value = value.strip()
    return bytes.fromhex(value.removeprefix("0x"))


@dataclass
class HandshakeCase:
    name: str
    params: dict[str, str] = field(default_factory=dict)
    # ("input" | "output", value) in the order the spec lists them
    events: list[tuple[str, str]] = field(default_factory=list)


def _parse_cases(section: str) -> list[HandshakeCase]:
    fenced = re.search(r"^```\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert fenced, "no vector block"
    cases: list[HandshakeCase] = []
    for raw in fenced.group(1).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([\w.]+)\s*[:=]\s*(.+)", line)
        assert match, f"unparsed vector line: {line!r}"
        key, value = match.groups()
        if key == "name":
            cases.append(HandshakeCase(value))
        elif key in ("input", "output"):
            cases[-1].events.append((key, value))
        else:
            cases[-1].params[key] = value
    return cases


SPEC_TEXT = SPEC.read_text()
INITIATOR_CASES = _parse_cases(_section(SPEC_TEXT, "Initiator Tests"))
RESPONDER_CASES = _parse_cases(_section(SPEC_TEXT, "Responder Tests"))

# What each spec error code must look like in our message: the act, and why.
ERROR_WORDS = {
    "READ_FAILED": "expected",
    "BAD_VERSION": "version",
    "BAD_PUBKEY": "public key",
    "BAD_TAG": "MAC",
    "BAD_CIPHERTEXT": "MAC on the static key",
}
ACT_WORDS = {"ACT1": "act one", "ACT2": "act two", "ACT3": "act three"}


def _check_error(value: str, error: HandshakeError | None) -> str:
    code = re.fullmatch(r"ERROR \((ACT\d)_(\w+?)(?: \d+)?\)", value)
    assert code, value
    act, reason = code.groups()
    assert error is not None, f"expected {value}, but the act was accepted"
    assert ACT_WORDS[act] in str(error)
    assert ERROR_WORDS[reason] in str(error)
    return f"{act}_{reason}"


def _check_keys(value: str, handshake: InitiatorHandshake | ResponderHandshake) -> None:
    names, values = value.split("=")
    by_name = dict(zip(names.split(","), (_hex(v) for v in values.split(",")), strict=True))
    keys = handshake.keys
    assert keys.send_key == by_name["sk"]
    assert keys.receive_key == by_name["rk"]


def _run(case: HandshakeCase, handshake: InitiatorHandshake | ResponderHandshake, receivers: list) -> str:
    """Replay the case's inputs through ``receivers`` in turn; return how it ended."""
    result: bytes | None = None
    error: HandshakeError | None = None
    if isinstance(handshake, InitiatorHandshake):
        result = handshake.act_one()
    steps = iter(receivers)
    for kind, value in case.events:
        if kind == "input":
            try:
                result, error = next(steps)(_hex(value)), None
            except HandshakeError as exc:
                result, error = None, exc
        elif value.startswith("ERROR"):
            outcome = _check_error(value, error)
            # Sticky: the failed handshake refuses everything afterwards.
            with pytest.raises(HandshakeError):
                _ = handshake.keys
            return outcome
        elif "=" in value:
            _check_keys(value, handshake)
            return "keys"
        else:
            assert error is None, error
            assert result == _hex(value)
    raise AssertionError(f"{case.name}: no final output")


def test_vector_files_parsed() -> None:
    assert len(INITIATOR_CASES) == 5
    assert len(RESPONDER_CASES) == 10


@pytest.mark.parametrize("case", INITIATOR_CASES, ids=lambda c: c.name)
def test_initiator_vectors(case: HandshakeCase) -> None:
    p = case.params
    assert public_key_of(_hex(p["ls.priv"])) == _hex(p["ls.pub"])
    assert public_key_of(_hex(p["e.priv"])) == _hex(p["e.pub"])
    handshake = InitiatorHandshake(_hex(p["ls.priv"]), _hex(p["rs.pub"]), _hex(p["e.priv"]))
    outcome = _run(case, handshake, [handshake.receive_act_two])
    if outcome == "keys":
        assert handshake.keys.remote_static == _hex(p["rs.pub"])
        assert handshake.keys.chaining_key == _hex(ROTATION["ck"])


@pytest.mark.parametrize("case", RESPONDER_CASES, ids=lambda c: c.name)
def test_responder_vectors(case: HandshakeCase) -> None:
    p = case.params
    assert public_key_of(_hex(p["ls.priv"])) == _hex(p["ls.pub"])
    handshake = ResponderHandshake(_hex(p["ls.priv"]), _hex(p["e.priv"]))
    outcome = _run(case, handshake, [handshake.receive_act_one, handshake.receive_act_three])
    if outcome == "keys":
        # The initiator of the initiator vectors is the one that dialled here.
        assert handshake.keys.remote_static == _hex(INITIATOR_CASES[0].params["ls.pub"])
        assert handshake.keys.chaining_key == _hex(ROTATION["ck"])


def test_every_failure_case_is_covered() -> None:
    outcomes = set()
    for case in INITIATOR_CASES:
        p = case.params
        hs = InitiatorHandshake(_hex(p["ls.priv"]), _hex(p["rs.pub"]), _hex(p["e.priv"]))
        outcomes.add(_run(case, hs, [hs.receive_act_two]))
    for case in RESPONDER_CASES:
        p = case.params
        rs = ResponderHandshake(_hex(p["ls.priv"]), _hex(p["e.priv"]))
        outcomes.add(_run(case, rs, [rs.receive_act_one, rs.receive_act_three]))
    assert outcomes == {
        "keys",
        "ACT1_READ_FAILED",
        "ACT1_BAD_VERSION",
        "ACT1_BAD_PUBKEY",
        "ACT1_BAD_TAG",
        "ACT2_READ_FAILED",
        "ACT2_BAD_VERSION",
        "ACT2_BAD_PUBKEY",
        "ACT2_BAD_TAG",
        "ACT3_READ_FAILED",
        "ACT3_BAD_VERSION",
        "ACT3_BAD_CIPHERTEXT",
        "ACT3_BAD_PUBKEY",
        "ACT3_BAD_TAG",
    }


def _parse_rotation() -> dict[str, str]:
    section = _section(SPEC_TEXT, "Message Encryption Tests")
    found = dict(re.findall(r"^\s*(ck|sk|rk)=(0x[0-9a-f]+)\s*$", section, re.MULTILINE))
    found |= {f"output {n}": v for n, v in re.findall(r"^\s*output (\d+): (0x[0-9a-f]+)\s*$", section, re.MULTILINE)}
    return found


ROTATION = _parse_rotation()
ROTATION_OUTPUTS = {int(k.split()[1]): _hex(v) for k, v in ROTATION.items() if k.startswith("output")}


def test_rotation_vectors_parsed() -> None:
    assert sorted(ROTATION_OUTPUTS) == [0, 1, 500, 501, 1000, 1001]


def test_rotation_vectors_encrypt() -> None:
    encryptor = MessageEncryptor(_hex(ROTATION["sk"]), _hex(ROTATION["ck"]))
    frames = [encryptor.encrypt(b"hello") for _ in range(1002)]
    for index, expected in ROTATION_OUTPUTS.items():
        assert frames[index] == expected, index
    # encrypt_many keeps the same nonce and rotation schedule.
    batch = MessageEncryptor(_hex(ROTATION["sk"]), _hex(ROTATION["ck"])).encrypt_many([b"hello"] * 1002)
    assert batch == frames


def test_rotation_vectors_through_the_batch_paths(libsodium: bool) -> None:
    # A writer's batches of like messages (encrypted into a FrameScratch, the headers
    # sealed by libsodium when it is there) and a reader's large chunk (runs opened in
    # batches) give and take exactly the spec's frames, across both rotations.
    encryptor = MessageEncryptor(_hex(ROTATION["sk"]), _hex(ROTATION["ck"]))
    scratch = FrameScratch()
    stream = b""
    for start in range(0, 1002, 122):
        count = min(122, 1002 - start)
        stream += b"".join(map(bytes, encryptor.encrypt_grouped_into([b"hello"] * count, 65569, scratch)))
    assert (scratch.head_targets is not None) is libsodium
    frame = len(b"hello") + 34
    for index, expected in ROTATION_OUTPUTS.items():
        assert stream[index * frame : (index + 1) * frame] == expected, index
    assert len(stream) >= 32 * 1024  # a chunk that the reader cuts into runs
    decryptor = MessageDecryptor(_hex(ROTATION["sk"]), _hex(ROTATION["ck"]))
    assert decryptor.feed(stream) == [b"hello"] * 1002


def test_rotation_vectors_decrypt_in_random_chunks() -> None:
    encryptor = MessageEncryptor(_hex(ROTATION["sk"]), _hex(ROTATION["ck"]))
    stream = b"".join(encryptor.encrypt(b"hello") for _ in range(1002))
    # The receiving side of the same direction holds sk as its rk.
    decryptor = MessageDecryptor(_hex(ROTATION["sk"]), _hex(ROTATION["ck"]))
    rng = random.Random(8)
    received: list[bytes] = []
    position = 0
    while position < len(stream):
        step = rng.randint(1, 120)
        received += decryptor.feed(stream[position : position + step])
        position += step
    assert received == [b"hello"] * 1002
    assert decryptor.buffered == 0


def test_hkdf_lines_of_the_spec() -> None:
    """Every ``ck, k = HKDF(salt, ikm)`` the spec shows, in the handshake and rotation traces."""
    rotation = re.findall(r"(0x[0-9a-f]{64}), (0x[0-9a-f]{64}) = HKDF\((0x[0-9a-f]{64}), (0x[0-9a-f]{64})\)", SPEC_TEXT)
    handshake = re.findall(
        r"HKDF\((0x[0-9a-f]{64}),(0x[0-9a-f]{64})\)\s*#\s*ck,temp_k\d=(0x[0-9a-f]{64}),(0x[0-9a-f]{64})", SPEC_TEXT
    )
    assert len(rotation) == 4 and len(handshake) >= 6
    for first, second, salt, ikm in rotation:
        assert hkdf_pair(_hex(salt), _hex(ikm)) == (_hex(first), _hex(second))
    for salt, ikm, first, second in handshake:
        assert hkdf_pair(_hex(salt), _hex(ikm)) == (_hex(first), _hex(second))
