"""The node's own v3 onion service, and onion address validation.

:class:`OnionService` asks Tor (``ADD_ONION``) to publish a v3 onion service
whose virtual port (9735 by default, Lightning's port) leads to a listener
of ours on 127.0.0.1. Its ED25519-V3 secret key is kept in a key file
(mode 0600), so the .onion address stays the same across restarts.

Ready means *published everywhere*: stem's ``await_publication`` returns
after the first HSDir accepts a descriptor, and a client dialing right then
was measured to fail about one time in three (the descriptor it looks up may
not be stored yet). So :meth:`OnionService.start` follows Tor's ``HS_DESC``
events (:class:`DescriptorPublication`): every descriptor Tor created must
be uploaded, and every upload answered ``UPLOADED``, before it returns.

The service is tied to our control connection (not ``Detach``): if this
process or its Tor goes away, the service goes with it. ``aclose`` removes
it explicitly (``DEL_ONION``).

Address validation (:func:`parse_onion_address`, :class:`OnionAddress`)
lives in :mod:`lnpmsg.transports.tor.address` and is re-exported here.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import stem  # type: ignore[import-untyped]
import trio

from lnpmsg.io.secret_file import create_secret_file
from lnpmsg.transports.tor.address import (
    OnionAddress,
    is_onion_host,
    parse_onion_address,
)
from lnpmsg.transports.tor.controller import TorController, TorEvent
from lnpmsg.transports.tor.errors import (
    OnionAddressError,
    OnionServiceError,
    TorControlError,
)

__all__ = [
    "DEFAULT_PUBLISH_TIMEOUT",
    "DEFAULT_VIRTUAL_PORT",
    "KEY_TYPE",
    "DescriptorPublication",
    "OnionAddress",
    "OnionAddressError",
    "OnionService",
    "is_onion_host",
    "load_onion_key",
    "parse_onion_address",
    "save_onion_key",
]

log = logging.getLogger(__name__)

#: the port peers dial on the .onion (BOLT 1's default Lightning port)
DEFAULT_VIRTUAL_PORT = 9735

#: how long descriptor publication may take: on the public network
#: introduction circuits plus uploads to 8+ HSDirs can take a minute or more
DEFAULT_PUBLISH_TIMEOUT = 180.0

#: Tor's name for v3 onion service keys (ADD_ONION's KeyType)
KEY_TYPE = "ED25519-V3"
#: an ED25519-V3 key blob is the 64-byte expanded secret key
_KEY_BYTES = 64


def load_onion_key(path: str | os.PathLike[str]) -> str | None:
    """The base64 ED25519-V3 key stored in ``path``, or ``None`` if there is no such file.

    The file holds one line ``ED25519-V3:<base64 of 64 bytes>``. A file that
    others can read is narrowed to 0600 (with a warning): the key is the
    service's identity.

    Raises :class:`OnionServiceError` if the file exists but is not such a key.
    """
    key_path = Path(path)
    try:
        text = key_path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise OnionServiceError(f"cannot read onion key file {key_path}: {exc}") from exc
    mode = key_path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("onion key file %s had mode %o; narrowing to 0600", key_path, mode)
        os.chmod(key_path, 0o600)
    key_type, sep, blob = text.partition(":")
    if not sep or key_type != KEY_TYPE:
        raise OnionServiceError(f"onion key file {key_path} does not hold an {KEY_TYPE} key (expected '{KEY_TYPE}:<base64>')")
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise OnionServiceError(f"onion key file {key_path} is corrupt (the key is not base64)") from None
    if len(raw) != _KEY_BYTES:
        raise OnionServiceError(f"onion key file {key_path} is corrupt (key is {len(raw)} bytes, expected {_KEY_BYTES})")
    return blob


def save_onion_key(path: str | os.PathLike[str], blob: str) -> None:
    """Store a new ED25519-V3 key blob in ``path``: mode 0600, whole or not at all.

    A crash or a full disk never leaves a truncated key behind (nor a
    temporary file), and an existing key is never replaced. Raises
    :class:`OnionServiceError` naming the file when it cannot be written.
    """
    key_path = Path(path)
    try:
        key_path.parent.mkdir(parents=True, exist_ok=True)
        create_secret_file(key_path, f"{KEY_TYPE}:{blob}\n".encode("ascii"))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OnionServiceError(f"cannot write the onion key {key_path}: {reason}") from exc


@dataclass(slots=True)
class DescriptorPublication:
    """Follows ``HS_DESC`` events of one service until every descriptor upload succeeded (sans-IO).

    Tor first announces each descriptor it built (``CREATED``, with its
    blinded-key id: one for the current time period, one for the next),
    then one ``UPLOAD`` per (descriptor, HSDir), each answered by
    ``UPLOADED`` or ``FAILED`` naming only the HSDir. So answers are
    matched to uploads per HSDir, and publication is complete when every
    created descriptor was uploaded and every upload was answered
    ``UPLOADED``.
    """

    service_id: str
    created: set[str] = field(default_factory=set)
    uploading: set[str] = field(default_factory=set)
    pending: Counter[str] = field(default_factory=Counter)
    uploads: int = 0
    uploaded: int = 0
    failures: list[str] = field(default_factory=list)

    def observe(self, action: str, address: str, hsdir: str | None, descriptor_id: str | None, reason: str | None = None) -> None:
        """Take one ``HS_DESC`` event's fields (events of other services are ignored)."""
        if address != self.service_id:
            return
        hsdir = (hsdir or "?").split("~")[0].lstrip("$").upper()
        if action == "CREATED" and descriptor_id:
            self.created.add(descriptor_id)
        elif action == "UPLOAD":
            if descriptor_id:
                self.uploading.add(descriptor_id)
            self.pending[hsdir] += 1
            self.uploads += 1
        elif action in ("UPLOADED", "FAILED") and self.pending[hsdir] > 0:
            self.pending[hsdir] -= 1
            if action == "UPLOADED":
                self.uploaded += 1
            else:
                self.failures.append(f"upload to HSDir {hsdir} failed: {reason or 'no reason given'}")

    @property
    def complete(self) -> bool:
        """Every created descriptor uploaded, every upload answered, none failed."""
        expected = self.created or self.uploading
        return (
            self.uploaded > 0
            and expected <= self.uploading
            and not any(self.pending.values())
            and not self.failures
        )

    def summary(self) -> str:
        waiting = sum(self.pending.values())
        text = (
            f"{len(self.created)} descriptors created, {len(self.uploading)} uploading, "
            f"{self.uploads} uploads: {self.uploaded} succeeded, {len(self.failures)} failed, {waiting} unanswered"
        )
        if self.failures:
            text += "; " + "; ".join(self.failures[-4:])
        return text


class OnionService:
    """The node's onion service: ``<address>.onion:<virtual_port>`` -> ``target_host:target_port``.

    ``key_file``: where the ED25519-V3 key is kept; created on first start
    (mode 0600), reused after, so the address survives restarts.
    ``target_host`` must be a loopback address: the listener behind an
    onion service must not be reachable from the network directly.
    """

    def __init__(
        self,
        controller: TorController,
        key_file: str | os.PathLike[str],
        target_port: int,
        *,
        target_host: str = "127.0.0.1",
        virtual_port: int = DEFAULT_VIRTUAL_PORT,
        publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT,
    ) -> None:
        try:
            loopback = ipaddress.ip_address(target_host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise OnionServiceError(f"the onion service must lead to a loopback listener (e.g. 127.0.0.1), not {target_host!r}")
        if not 0 < target_port <= 0xFFFF or not 0 < virtual_port <= 0xFFFF:
            raise OnionServiceError("onion service ports must be 1..65535")
        self._ctl = controller
        self.key_file = Path(key_file)
        self.target_host = target_host
        self.target_port = target_port
        self.virtual_port = virtual_port
        self.publish_timeout = publish_timeout
        self._address: OnionAddress | None = None

    @property
    def address(self) -> OnionAddress:
        if self._address is None:
            raise OnionServiceError("the onion service is not started")
        return self._address

    @property
    def target(self) -> str:
        """What peers dial: ``<56 chars>.onion:<virtual_port>``."""
        return f"{self.address.hostname}:{self.virtual_port}"

    async def start(self, *, wait_published: bool = True) -> OnionAddress:
        """Add the service to Tor; with ``wait_published``, return only once every descriptor is uploaded.

        Raises :class:`OnionServiceError` (Tor refused, the key file is bad,
        or publication did not complete within ``publish_timeout``).
        """
        if self._address is not None:
            raise OnionServiceError("the onion service is already started")
        blob = await trio.to_thread.run_sync(load_onion_key, self.key_file)
        ports = {self.virtual_port: f"{self.target_host}:{self.target_port}"}
        async with self._ctl.events(stem.control.EventType.HS_DESC) as events:
            try:
                if blob is None:
                    response = await self._ctl.call(
                        self._ctl.stem.create_ephemeral_hidden_service, ports, key_type="NEW", key_content=KEY_TYPE
                    )
                else:
                    response = await self._ctl.call(
                        self._ctl.stem.create_ephemeral_hidden_service, ports, key_type=KEY_TYPE, key_content=blob
                    )
            except TorControlError as exc:
                raise OnionServiceError(f"Tor refused to add the onion service: {exc}") from exc
            self._address = parse_onion_address(response.service_id)
            try:
                if blob is None:
                    if response.private_key_type != KEY_TYPE or not response.private_key:
                        raise OnionServiceError(f"Tor returned no {KEY_TYPE} key for the new onion service")
                    await trio.to_thread.run_sync(save_onion_key, self.key_file, response.private_key)
                    log.info("created onion key %s for %s", self.key_file, self._address.hostname)
                if wait_published:
                    await self._wait_published(events)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self.aclose()
                raise
        log.info("onion service %s ready -> %s:%d", self.target, self.target_host, self.target_port)
        return self._address

    async def _wait_published(self, events: trio.MemoryReceiveChannel[TorEvent]) -> None:
        assert self._address is not None
        tracker = DescriptorPublication(self._address.service_id)
        with trio.move_on_after(self.publish_timeout):
            async for event in events:
                tracker.observe(event.action, event.address, event.directory, event.descriptor_id, event.reason)
                if tracker.complete:
                    log.info("onion service %s published: %s", self._address.hostname, tracker.summary())
                    return
        raise OnionServiceError(
            f"onion service {self._address.hostname} was not published within {self.publish_timeout:g} s "
            f"({tracker.summary()})"
        )

    async def aclose(self) -> None:
        """Remove the service from Tor (``DEL_ONION``); idempotent, quiet if Tor is already gone."""
        address, self._address = self._address, None
        if address is None:
            return
        with trio.CancelScope(shield=True):
            if not self._ctl.is_alive:
                return
            try:
                await self._ctl.call(self._ctl.stem.remove_ephemeral_hidden_service, address.service_id)
            except TorControlError as exc:
                log.warning("could not remove onion service %s: %s", address.hostname, exc)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
