"""Static channel backups in the channel app (the trio shell of :mod:`.backup`): a mixin of
:class:`~lnpmsg.channels.app.ChannelsApp`.

- ``<channels dir>/channels.backup`` is rewritten (atomically, owner-only) at start and whenever
  the set of channels to recover changes: a channel's funding became known, a channel closed, a
  backup was restored. Copy it somewhere safe together with the seed material (see the README).
  A file there holding channels the store lacks (the old backup put back on a fresh node) is
  renamed ``channels.backup.<unix time>.old`` first, never overwritten.
- ``channels.exportchannelbackup``: the current backup (hex) and where the node keeps it.
- ``channels.listchannelbackup [backup | file]``: the channels of a backup (the node's current one
  by default) without restoring: each channel, its peer and the peer's alias (from the gossip when
  the backup was made: :mod:`.backup`), its funding, and whether this node has it.
  Each channel names its peer's alias from the gossip app (when there is one; a restored channel,
  the alias of the backup it came from until then); a channel peer's ``node_announcement`` with a
  new alias rewrites the file (:meth:`BackupCalls.on_peer_announced`). ``listchannels`` names each
  peer the same way (``peer_alias``).
- ``backup_watchers``: functions called with the entries whenever they change (the peer storage
  app sends the backup to the peers that keep it for us: :mod:`.peer_storage`).
- ``channels.restorechannels [backup]``: on a node with the same channel seed, each channel of the
  backup becomes a restored channel (:func:`~.backup.restored_state`); refused as a whole when one
  of them exists here. The peer is dialed (and kept dialed until its commitment is on chain) and,
  once connected, asked to close (:func:`~.backup.close_request`); nothing of ours is broadcast.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from collections.abc import Callable
from typing import Any

import trio

from lnpmsg.io.atomic_file import write_atomic
from lnpmsg.rpc.params import ParamsError, hex_param
from lnpmsg.wallet.app import ChainAppError

from .backup import BACKUP_FILE, BackupEntry, BackupError, close_request, decode_backup, encode_backup, entry_of, restored_state, view
from .manager import describe
from .state import Phase

__all__ = ["BackupCalls"]

log = logging.getLogger(__name__)


class BackupCalls:
    """``exportchannelbackup``, ``restorechannels`` and the backup file; the app supplies
    ``directory``, ``_manager``, ``onchain``, ``reconnector``, ``node``, ``spawn``, ``send`` and ``_claim``."""

    directory: Path
    _manager: Any
    onchain: Any
    reconnector: Any
    node: Any
    spawn: Any
    send: Any
    _claim: Any
    _backup_lock: trio.Lock | None = None
    #: called (in the app's task, must not block) with the backup's entries each time they change
    backup_watchers: list[Callable[[list[BackupEntry]], None]]
    _watched: list[BackupEntry] | None = None
    #: the aliases of channel peers' node_announcements heard since start (newer than the gossip's store may be yet)
    _heard_aliases: dict[bytes, str] | None = None
    #: the aliases named by the backups channels were restored from (a node without gossip yet knows no other)
    _restored_aliases: dict[bytes, str] | None = None
    #: the peers of the channels in the backup (None: to be counted at the next node_announcement)
    _channel_peers: set[bytes] | None = None

    @property
    def backup_path(self) -> Path:
        """Where the node keeps its current static channel backup."""
        return self.directory / BACKUP_FILE

    def _addresses(self, peer_id: bytes) -> tuple[str, ...]:
        found = []
        if self.reconnector is not None and (known := self.reconnector.book.get(peer_id)):
            found.append(known)
        peer = self.node.peers.get(peer_id)
        if peer is not None and peer.dialed and peer.dialed not in found:
            found.append(peer.dialed)
        return tuple(found)

    def _entries(self, aliases: dict[bytes, str] | None = None) -> list[BackupEntry]:
        """The backup's entries: every channel with a funding that is not closed cooperatively;
        ``aliases``: the peers' (:meth:`_peer_aliases`), none without."""
        entries = []
        for channel in self._manager().channels.values():
            if channel.phase is Phase.CLOSED:
                continue
            alias = (aliases or {}).get(channel.peer_id, "")
            entry = entry_of(channel.key, channel.peer_id, channel.core.state, self._addresses(channel.peer_id), alias)
            if entry is not None:
                entries.append(entry)
        return entries

    async def _peer_aliases(self, peers: set[bytes] | None = None) -> dict[bytes, str]:
        """The aliases ``peers`` (by default every channel's peer) announce: as the gossip app knows
        them or as heard since start, else as the backup a channel was restored from named them."""
        if peers is None:
            peers = {channel.peer_id for channel in self._manager().channels.values()}
        aliases = {p: alias for p, alias in (self._restored_aliases or {}).items() if p in peers}
        announced_alias = getattr(self.node.apps.get("gossip"), "announced_alias", None)
        for peer_id in peers if announced_alias is not None else ():
            try:
                alias = await announced_alias(peer_id)
            except Exception as exc:  # noqa: BLE001 - the gossip app stopping or its store failing: a name is not worth a backup
                log.info("channels: no peer alias: the gossip cannot be read: %s", exc)
                break
            if alias:
                aliases[peer_id] = alias
        return aliases | {p: alias for p, alias in (self._heard_aliases or {}).items() if p in peers}

    def channel_peers_changed(self) -> None:
        """A channel opened, closed or was restored: the peers :meth:`on_peer_announced` listens for
        are counted again at the next announcement."""
        self._channel_peers = None

    def _backed_up_peers(self) -> set[bytes]:
        """The peers of the channels the backup holds (every one not closed cooperatively), kept
        between channel changes: a gossip sync brings thousands of node_announcements. (A channel
        closed without a ``ChannelClosed`` event, e.g. forgotten by its funding deadline, leaves its
        peer in until the next count: its announcement costs a rewrite that finds nothing changed.)"""
        if self._channel_peers is None:
            self._channel_peers = {c.peer_id for c in self._manager().channels.values() if c.phase is not Phase.CLOSED}
        return self._channel_peers

    def on_peer_announced(self, event: object) -> None:
        """An event listener (quick, never blocks: a set lookup per announcement): a channel peer's
        ``node_announcement`` with a new alias rewrites the backup (a public channel's peer often
        announces itself only after the channel is ready, the backup's last rewrite, and a channel
        restored on a node without gossip yet has no alias until then). The alias is kept from the
        event: the gossip's store may not have it yet when the rewrite asks."""
        if getattr(event, "topic", "") != "gossip.node_announcement" or getattr(self, "manager", None) is None:
            return
        alias = getattr(getattr(event, "message", None), "alias_text", "")
        if not alias:
            return
        peers = self._backed_up_peers()
        heard = self._heard_aliases = self._heard_aliases or {}
        for node_id in getattr(event, "node_ids", ()):
            if node_id in peers and heard.get(node_id) != alias:
                heard[node_id] = alias
                self.spawn(self.write_backup)

    async def _aliased_entries(self) -> list[BackupEntry]:
        """The backup's entries, each with its peer's alias."""
        return self._entries(await self._peer_aliases())

    async def backup_bytes(self) -> bytes:
        """The encrypted backup of every channel with a funding that is not closed cooperatively."""
        return encode_backup(await self._aliased_entries(), self._manager().seed, os.urandom(12))

    async def write_backup(self) -> None:
        """Rewrite the backup file (a failure is logged: the channels go on, the next change tries again)."""
        if self._backup_lock is None:
            self._backup_lock = trio.Lock()
        async with self._backup_lock:
            manager = self._manager()
            entries = await self._aliased_entries()
            known = set(manager.store.keys())
            try:
                aside = await trio.to_thread.run_sync(_write_backup, self.backup_path, manager.seed, known, entries)
                if aside is not None:
                    log.warning("channels: %s held channels this node does not have (or another node's): kept as %s; "
                                "restore it with 'lnpmsg restorechannels'", self.backup_path, aside)  # fmt: skip
            except OSError as exc:
                log.error("channels: the channel backup %s could not be written: %s", self.backup_path, exc)
            # (addresses and aliases aside: what a peer keeps for us changes with the channels only)
            plain = sorted((replace(e, addresses=(), alias="") for e in entries), key=_by_key)
            if plain != self._watched:
                self._watched = plain
                for watcher in self.backup_watchers:
                    watcher(entries)

    def backup_entries(self) -> list[BackupEntry]:
        """The backup's entries now (what :meth:`backup_bytes` encrypts, but for the peers' aliases)."""
        return self._entries()

    def awaiting_close(self, channel: Any) -> bool:
        """A restored channel whose funding the monitor has not seen spent yet."""
        if not channel.core.state.restored:
            return False
        status = self.onchain.status(channel) if self.onchain is not None else None
        return status is None or status.get("state") == "open"

    async def ask_to_close(self, peer_id: bytes) -> None:
        """Ask a connected peer to close each restored channel with it (nothing when there is none)."""
        for channel in self._manager().of_peer(peer_id):
            if not self.awaiting_close(channel):
                continue
            point = channel.core.secrets.commitment_point(0)
            for message in close_request(channel.channel_id, point):
                try:
                    await self.send(peer_id, message)
                except Exception as exc:  # the peer left again: asked once more when it is back
                    log.info("channels: cannot ask %s to close %s: %s", peer_id.hex()[:16], channel.channel_id.hex(), exc)
                    return
            log.info("channels: asked %s to close the restored channel %s", peer_id.hex()[:16], channel.channel_id.hex())

    # ------------------------------------------------------------ control calls

    async def exportchannelbackup(self, file: str | None = None) -> dict[str, Any]:
        """The current static channel backup (hex, encrypted), the number of channels in it, and
        the file the node keeps it in (rewritten whenever a channel opens or closes); FILE: also
        write it there (an absolute path on the node's machine)."""
        data = await self.backup_bytes()
        count = len(decode_backup(data, self._manager().seed))
        result: dict[str, Any] = {"backup": data.hex(), "channels": count, "path": str(self.backup_path)}
        if file is not None:
            target = _absolute(file)
            try:
                await trio.to_thread.run_sync(lambda: write_atomic(target, data, mode=0o600))
            except OSError as exc:
                raise ChainAppError(f"cannot write {target}: {exc}", {"error": "OSError"}) from None
            result["file"] = str(target)
        return result

    async def listchannelbackup(self, backup: str | None = None, file: str | None = None) -> dict[str, Any]:
        """The channels of a backup made by a node with this node's channel seed, given as BACKUP (hex)
        or FILE (an absolute path on the node's machine), or of the node's current backup (neither),
        without restoring: each channel's id, peer and the peer's alias (when the backup was made),
        funding, capacity, and ``on_this_node`` (a restore refuses a backup with such a channel)."""
        if backup is None and file is None:
            entries = await self._aliased_entries()
        else:
            entries = await self._read_backup(backup, file)
        here = {e.key for e in self.lacking(entries)}
        return {"channels": [view(e) | {"on_this_node": e.key not in here} for e in entries]}

    async def restorechannels(self, backup: str | None = None, file: str | None = None) -> dict[str, Any]:
        """Restore the channels of a ``channels.backup`` made by a node with this node's channel
        seed, given as BACKUP (hex) or FILE (an absolute path on the node's machine): each waits for
        its peer's commitment; the peer is asked to close. Each restored channel also shows its peer's
        alias when the backup was made."""
        entries = await self._read_backup(backup, file)
        return {"channels": await self.restored_views(await self.restore_entries(entries), entries)}

    async def restored_views(self, restored: list[Any], entries: list[BackupEntry]) -> list[dict[str, Any]]:
        """The channels :meth:`restore_entries` restored from ``entries``, as listchannels shows them, each with
        its peer's alias: the backup's, else the gossip's now (a backup a peer kept for us names none)."""
        aliases = await self._peer_aliases()
        return [describe(c) | {"alias": e.alias or aliases.get(e.peer_id) or None} for c, e in zip(restored, entries, strict=True)]

    async def _read_backup(self, backup: str | None, file: str | None) -> list[BackupEntry]:
        """The entries of the backup given as hex or as a file (one of the two); a clear error when it is not one of ours."""
        if (backup is None) == (file is None):
            raise ParamsError("give the backup (hex) or its file, one of the two")
        if file is not None:
            try:
                data = await trio.to_thread.run_sync(_absolute(file).read_bytes)
            except OSError as exc:
                raise ChainAppError(f"cannot read the backup {file}: {exc.strerror or exc}", {"error": "OSError"}) from None
        else:
            data = hex_param(backup, "backup")
        try:
            return decode_backup(data, self._manager().seed)
        except BackupError as exc:
            raise ChainAppError(str(exc), {"error": "BackupError"}) from None

    def lacking(self, entries: list[BackupEntry]) -> list[BackupEntry]:
        """The entries of channels this node does not have (a restore would add them)."""
        manager = self._manager()
        stored = set(manager.store.keys())
        return [e for e in entries if e.key not in stored and manager.find(None, e.channel_id) is None]

    async def restore_entries(self, entries: list[BackupEntry]) -> list[Any]:
        """Restore ``entries`` (all or none: refused when one exists here); the restored channels."""
        manager = self._manager()
        if not entries:
            raise ParamsError("the backup holds no channel")
        stored = set(manager.store.keys())
        existing = [e.channel_id.hex() for e in entries
                    if e.key in stored or manager.find(None, e.channel_id) is not None]  # fmt: skip
        if existing:
            raise ChainAppError(
                f"refused: {len(existing)} channel(s) of the backup exist on this node ({', '.join(existing)}); "
                "nothing was restored (a backup is only for a node that lost them)",
                {"error": "ChannelExists", "channels": existing},
            )
        restored = []
        for entry in entries:
            try:
                channel = await manager.adopt(entry.key, entry.peer_id, restored_state(entry))
            except (ValueError, OSError) as exc:
                raise ChainAppError(f"cannot restore {entry.channel_id.hex()}: {exc}", {"error": "BackupError"}) from exc
            self._claim(channel)
            restored.append(channel)
            self.channel_peers_changed()
            if entry.alias:
                self._restored_aliases = (self._restored_aliases or {}) | {entry.peer_id: entry.alias}
            if self.reconnector is not None and entry.addresses and self.reconnector.book.remember(entry.peer_id, entry.addresses[0]):
                await trio.to_thread.run_sync(self.reconnector.book.save)
            log.warning("channels: restored %s with %s from a backup: asking the peer to close", entry.channel_id.hex(), entry.peer_id.hex())
        await self.write_backup()
        for peer_id in {c.peer_id for c in restored}:
            if peer_id in self.node.peers:
                await self.ask_to_close(peer_id)
            elif self.reconnector is not None:
                self.reconnector.peer_gone(peer_id)  # dials it (its peer_ready asks)
        return restored


def _absolute(file: object) -> Path:
    if not isinstance(file, str) or not Path(file).is_absolute():
        raise ParamsError(f"file must be an absolute path, got {file!r}")
    return Path(file)


def _write_backup(path: Path, seed: bytes, known: set[str], entries: list[BackupEntry]) -> Path | None:
    """Write the backup of ``entries`` at ``path`` (atomically, owner-only), unless the file there holds
    just those (a start with the same channels writes nothing: a new nonce would be all the change).
    A file holding a channel the store does not (a node started on a fresh store with the old backup
    put back in place must not overwrite the only copy), or not readable with ``seed``, is first
    renamed ``<name>.<unix time>.old``: its new name, else None."""
    aside = None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        pass
    else:
        try:
            found: list[BackupEntry] | None = decode_backup(data, seed)
        except BackupError:
            found = None
        if found is not None:
            # a peer's address and alias learnt before stay known (at start no peer is connected yet;
            # a peer whose public channels all closed is gone from the gossip)
            before = {entry.key: entry for entry in found}
            entries = [replace(e, addresses=e.addresses + tuple(a for a in before[e.key].addresses if a not in e.addresses),
                               alias=e.alias or before[e.key].alias) if e.key in before else e
                       for e in entries]  # fmt: skip
            if sorted(found, key=_by_key) == sorted(entries, key=_by_key):
                return None
        if found is None or any(entry.key not in known for entry in found):
            aside = path.with_name(f"{path.name}.{int(time.time())}.old")
            os.replace(path, aside)
    write_atomic(path, encode_backup(entries, seed, os.urandom(12)), mode=0o600)
    return aside


def _by_key(entry: BackupEntry) -> str:
    return entry.key
