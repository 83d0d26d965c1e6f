"""Test vectors and message definitions read from the BOLT files in ../shared.

Nothing here is retyped from the spec: the BigSize, TLV and signed-integer
vectors come from 01-messaging.md, the message and TLV definitions from
csv/peer_wire.csv, and the feature table from 09-features.md.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lnpmsg.wire import fields as F
from lnpmsg.wire.fields import Field
from lnpmsg.wire.message import Message, message
from lnpmsg.wire.tlv import EMPTY_TLV_STREAM, TlvSchema, TlvStream

BOLTS = Path(__file__).resolve().parents[2] / "shared" / "specs" / "bolts"
MESSAGING = BOLTS / "01-messaging.md"
FEATURES_MD = BOLTS / "09-features.md"
PEER_WIRE_CSV = BOLTS / "csv" / "peer_wire.csv"


# ---------------------------------------------------------------- markdown


def _section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or higher level."""
    match = re.search(rf"^(#+) {re.escape(heading)}\s*$", text, re.MULTILINE)
    if match is None:
        raise LookupError(f"no heading {heading!r}")
    level = len(match[1])
    rest = text[match.end() :]
    stop = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    return rest[: stop.start()] if stop else rest


def _json_blocks(text: str) -> list[Any]:
    return [
        json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.DOTALL)
    ]


@cache
def _messaging() -> str:
    return MESSAGING.read_text()


def bigsize_decoding_vectors() -> list[dict[str, Any]]:
    (block,) = _json_blocks(_section(_messaging(), "BigSize Decoding Tests"))
    return block  # type: ignore[no-any-return]


def bigsize_encoding_vectors() -> list[dict[str, Any]]:
    (block,) = _json_blocks(_section(_messaging(), "BigSize Encoding Tests"))
    return block  # type: ignore[no-any-return]


def signed_integer_vectors() -> list[dict[str, Any]]:
    (block,) = _json_blocks(
        _section(_messaging(), "Appendix D: Signed Integers Test Vectors")
    )
    return block  # type: ignore[no-any-return]


@dataclass
class TlvVector:
    """One stream of Appendix B: its bytes, whether it is valid, where it applies, and why."""

    hex: str
    valid: bool
    namespaces: tuple[str, ...]
    note: str
    section: str
    # For valid n1 streams with values: record name -> {field name: value text}
    values: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def data(self) -> bytes:
        return bytes.fromhex(self.hex)

    def __str__(self) -> str:
        return f"{'valid' if self.valid else 'invalid'} {','.join(self.namespaces)} 0x{self.hex} ({self.note})"


def _namespaces(sentence: str) -> tuple[str, ...]:
    named = re.findall(r"`(n\d)`", sentence)
    if named:
        return tuple(named)
    if re.search(r"\b(any|either) namespace", sentence):
        return ("n1", "n2")
    raise LookupError(f"cannot tell the namespaces of: {sentence!r}")


def _parse_values(text: str) -> dict[str, dict[str, str]]:
    # "`tlv3` `node_id`=02... `amount_msat_1`=1 `amount_msat_2`=2"
    record = re.match(r"`(\w+)`", text)
    assert record is not None, text
    return {record[1]: dict(re.findall(r"`(\w+)`=(\S+)", text))}


def tlv_vectors() -> list[TlvVector]:
    """Every stream of Appendix B ("Type-Length-Value Test Vectors")."""
    appendix = _section(_messaging(), "Appendix B: Type-Length-Value Test Vectors")
    vectors: list[TlvVector] = []
    section = ""
    sentence = ""
    pending: tuple[bool, str] | None = None
    for line in appendix.splitlines():
        line = line.strip()
        if line.startswith("### "):
            section = line[4:]
            continue
        if line.startswith(("The following", "In addition")):
            sentence = line
            continue
        if (
            sentence
            and not sentence.endswith(":")
            and line
            and not line.startswith("1.")
        ):
            sentence += " " + line  # the sentence goes on over lines
            continue
        stream = re.match(r"1\. (Valid|Invalid) stream: 0x([0-9a-f ]*)$", line)
        if stream:
            pending = (stream[1] == "Valid", stream[2].replace(" ", ""))
            continue
        note = re.match(r"2\. (Reason|Explanation|Values): (.*)$", line)
        if note and pending is not None:
            valid, hex_ = pending
            values = _parse_values(note[2]) if note[1] == "Values" else {}
            vectors.append(
                TlvVector(hex_, valid, _namespaces(sentence), note[2], section, values)
            )
            pending = None
    return vectors


def init_extension_vectors() -> list[tuple[bytes, bool, str]]:
    """Appendix C: whole ``init`` messages, valid or not, with the reason."""
    appendix = _section(_messaging(), "Appendix C: Message Extension")
    out = []
    valid = True
    for line in appendix.splitlines():
        if line.startswith("The following `init` messages are valid"):
            valid = True
        elif line.startswith("The following `init` messages are invalid"):
            valid = False
        match = re.match(r"- `0x([0-9a-f]+)`: (.*)$", line)
        if match:
            out.append((bytes.fromhex(match[1]), valid, match[2]))
    return out


def feature_table() -> list[dict[str, Any]]:
    """The rows of 09-features.md's table: bits, name, description, context, dependencies."""
    rows = []
    for line in FEATURES_MD.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or not re.fullmatch(r"\d+/\d+", cells[0]):
            continue
        even, odd = (int(b) for b in cells[0].split("/"))
        rows.append(
            {
                "bits": (even, odd),
                "name": cells[1].strip("`"),
                "assumed": cells[2] == "ASSUMED",
                "context": cells[3],
                "depends": tuple(
                    d.strip().strip("`") for d in cells[4].split(",") if d.strip()
                ),
            }
        )
    return rows


# ---------------------------------------------------------------- csv definitions

# The spec's type names, as field types of lnpmsg.wire.
CSV_TYPES: dict[str, Field] = {
    "byte": F.byte,
    "u8": F.u8,
    "u16": F.u16,
    "u32": F.u32,
    "u64": F.u64,
    "s8": F.s8,
    "s16": F.s16,
    "s32": F.s32,
    "s64": F.s64,
    "tu16": F.tu16,
    "tu32": F.tu32,
    "tu64": F.tu64,
    "bigsize": F.bigsize,
    "point": F.point,
    "signature": F.signature,
    "sha256": F.sha256,
    "chain_hash": F.chain_hash,
    "channel_id": F.channel_id,
    "short_channel_id": F.short_channel_id,
}


@dataclass
class CsvSpec:
    """Messages, TLV streams and subtypes of one spec csv, as lnpmsg.wire declarations."""

    message_types: dict[str, int]
    message_fields: dict[
        str, list[tuple[str, str, str]]
    ]  # name -> [(field, type, count)]
    tlv_records: dict[str, dict[int, tuple[str, list[tuple[str, str, str]]]]]
    subtypes: dict[str, list[tuple[str, str, str]]]

    def field_type(self, type_name: str) -> Field:
        if type_name in CSV_TYPES:
            return CSV_TYPES[type_name]
        if type_name in self.subtypes:
            return F.record(
                type_name, *self.fields_of(self.subtypes[type_name], where=type_name)
            )
        raise KeyError(f"unknown csv type {type_name!r}")

    def fields_of(
        self, rows: list[tuple[str, str, str]], where: str
    ) -> list[tuple[str, Field]]:
        """Fold each ``len`` field into the array it counts (it must come right before)."""
        out: list[tuple[str, Field]] = []
        counts = {
            count
            for _, _, count in rows
            if count and not count.isdigit() and count != "..."
        }
        for i, (name, type_name, count) in enumerate(rows):
            if name in counts:
                nxt = rows[i + 1] if i + 1 < len(rows) else None
                if nxt is None or nxt[2] != name:
                    raise ValueError(
                        f"{where}: length {name} is not right before its array"
                    )
                continue
            if not count:
                out.append((name, self.field_type(type_name)))
            elif count == "...":
                out.append(
                    (
                        name,
                        F.rest_bytes
                        if type_name == "byte"
                        else F.array_of(self.field_type(type_name), ...),
                    )
                )
            elif count.isdigit():
                n = int(count)
                out.append(
                    (
                        name,
                        F.fixed_bytes(n)
                        if type_name == "byte"
                        else F.array_of(self.field_type(type_name), n),
                    )
                )
            else:
                prefix_type = CSV_TYPES[{r[0]: r[1] for r in rows}[count]]
                if type_name == "byte":
                    out.append(
                        (
                            name,
                            F.u16_prefixed_bytes
                            if prefix_type is F.u16
                            else F.prefixed_bytes(prefix_type),
                        )
                    )
                else:
                    out.append(
                        (name, F.array_of(self.field_type(type_name), prefix_type))
                    )
        return out

    def tlv_schema(self, stream: str) -> TlvSchema:
        records = {}
        for tlv_type, (record_name, rows) in self.tlv_records[stream].items():
            flds = self.fields_of(rows, where=f"{stream}.{record_name}")
            records[tlv_type] = (
                record_name,
                flds[0][1] if len(flds) == 1 else F.record(record_name, *flds),
            )
        return TlvSchema(records, name=stream)

    def message_declaration(
        self, name: str
    ) -> tuple[int, list[tuple[str, Field]], TlvSchema | None]:
        rows = self.message_fields[name]
        schema = None
        if rows and rows[-1][1] in self.tlv_records:
            schema = self.tlv_schema(rows[-1][1])
            rows = rows[:-1]
        return self.message_types[name], self.fields_of(rows, where=name), schema

    def message_class(self, name: str) -> type[Message]:
        """A message class declared with @message from the csv definition."""
        msg_type, flds, schema = self.message_declaration(name)
        cls_fields: list[Any] = [(n, Any) for n, _ in flds]
        if schema is not None:
            cls_fields.append(
                ("tlvs", TlvStream, dataclasses.field(default=EMPTY_TLV_STREAM))
            )
        cls = dataclasses.make_dataclass(
            "".join(part.title() for part in name.split("_")),
            cls_fields,
            bases=(Message,),
            namespace={"FIELDS": tuple(flds)},
            frozen=True,
            slots=True,
        )
        return message(type=msg_type, tlvs=schema)(cls)


@cache
def peer_wire() -> CsvSpec:
    spec = CsvSpec({}, {}, {}, {})
    with PEER_WIRE_CSV.open(newline="") as f:
        for row in csv.reader(f):
            kind = row[0]
            if kind == "msgtype":
                spec.message_types[row[1]] = int(row[2])
                spec.message_fields[row[1]] = []
            elif kind == "msgdata":
                spec.message_fields[row[1]].append(
                    (row[2], row[3], row[4] if len(row) > 4 else "")
                )
            elif kind == "tlvtype":
                spec.tlv_records.setdefault(row[1], {})[int(row[3])] = (row[2], [])
            elif kind == "tlvdata":
                records = spec.tlv_records[row[1]]
                (entry,) = [rows for name, rows in records.values() if name == row[2]]
                entry.append((row[3], row[4], row[5] if len(row) > 5 else ""))
            elif kind == "subtype":
                spec.subtypes[row[1]] = []
            elif kind == "subtypedata":
                spec.subtypes[row[1]].append(
                    (row[2], row[3], row[4] if len(row) > 4 else "")
                )
    return spec
