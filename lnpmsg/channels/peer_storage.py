"""BOLT 1 peer storage (``option_provide_storage``, bits 42/43), joined to the static channel backups.

An app of its own (``peer_storage``), mounted before the channel app so that its ``peer_ready``
runs first: the ``peer_storage_retrieval`` leaves right after ``init``, before any
``channel_reestablish`` (BOLT 1: a node that lost its data must get it back before reestablishing).
It owns ``peer_storage`` (7) and ``peer_storage_retrieval`` (9) and reads the channel app (its
channels, seed and backup); the channel app knows nothing of it but its ``backup_watchers``.

Providing storage (bit 43 unless ``provide=False``, ``lnpmsg node --no-peer-storage``): the last
blob of each peer with an open channel is kept in ``<directory>/theirs`` (:mod:`.peer_storage_store`);
a peer without one is not stored (BOLT 1 allows it; not doing so bounds the disk to our channel
peers, as Core Lightning does). At most one write per peer per ``write_interval`` (60 s): a blob
that comes sooner waits in memory and a later one replaces it. A crash in that minute loses the
waiting blob: the file keeps the one before, which is what the next retrieval returns; the peer
sees it differs from what it sent and sends again (as this app does as a user). The blob goes
back in a ``peer_storage_retrieval`` after ``init`` on every connection, also after the channels
closed; it is deleted ``retention_blocks`` (2016) blocks after the last channel closed.

Using peers' storage: a peer offering bit 42 or 43 with which we have a channel gets our static
channel backup (:func:`~.backup.encode_padded`: the same encrypted form, padded to 65531 bytes,
that peer's channels first; when not all fit, the others are left out, logged) whenever the backup's
channels change, and after a reconnection when its retrieval is not what we would send (or none
came within ``check_after`` seconds). A node with no channel with the peer sends nothing, so a node
that lost its data never overwrites what a peer holds for it; nor does it while the peer's last
retrieval holds channels the node lacks (a new channel opened before the restore).
Each peer's last retrieval that decrypts is kept in ``<directory>/ours``.

What a peer returns is checked against the latest backup we sent it (a digest of its channels kept in
``<directory>/sent``, so also after a restart): a retrieval that does not decrypt with our channel
seed (foreign, truncated, garbage) or that holds other channels than the latest we sent (an older
copy: the peer lost our update) gets the ``warning`` BOLT 1 allows (once per connection, with a
zero channel id; logged at INFO) and the connection stays. Such a retrieval never replaces a better
kept copy: a blob that does not decrypt is never kept, and an older one does not replace a kept copy
that is the latest we sent (the one a restore should read).

Recovery: a retrieval holding channels the node lacks is logged with what to do:
``peer_storage.restorechannels`` (``lnpmsg restorechannels --from-peers``) restores every channel
the kept retrievals hold that the node lacks, through the channel app's restore (the peer is asked
to force-close, our balance is swept); with ``recover=True`` (``--recover-from-peers``) that happens
as each retrieval arrives. A node that lost its data dir does not know its peers (``peers.json`` is
gone): while recovering (``recover=True``, or ``restorechannels`` finding nothing yet) it looks for
its public channels' peers in the gossip it syncs and connects to them (:mod:`.peer_finder`: a few
at once, with back-off) until one returns the backup or ``search_time`` passed. Private channels'
peers are not in gossip: they must be connected to by hand. ``peer_storage.listpeerstorage``: what
we hold for peers and what peers hold for us (sizes and times, never contents).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import trio

from lnpmsg.app import App, AppError
from lnpmsg.node.peer import Peer
from lnpmsg.rpc.params import ParamsError
from lnpmsg.wire import PeerStorage, PeerStorageRetrieval, WarningMessage

from .backup import PEER_BLOB_SIZE, BackupEntry, BackupError, decode_backup, encode_padded
from .peer_finder import POLL_INTERVAL, PRIVATE_NOTE, SEARCH_TIME, channel_peers_in_gossip, search
from .peer_storage_store import RETENTION_BLOCKS, WRITE_INTERVAL, BlobStore, StoredBlob, WriteSchedule, retention
from .state import Phase

__all__ = ["PROVIDE_STORAGE_BIT", "PeerStorageApp"]

log = logging.getLogger(__name__)

#: option_provide_storage, optional
PROVIDE_STORAGE_BIT = 43
#: seconds after a connection by which a peer that keeps our backup has sent it back (else we send it)
CHECK_AFTER = 5.0


class PeerStorageApp(App):
    """BOLT 1 peer storage (see the module docs).

    Args:
        directory: where the blobs are kept (``DATA_DIR/peer_storage``).
        channels_app / chain_app: the names of the channel app and the chain app.
        provide: offer ``option_provide_storage`` and keep channel peers' blobs.
        recover: restore the channels a peer's retrieval holds that the node lacks, as it arrives.
        gossip_app: the gossip app where a recovering node looks for its channel peers.
        write_interval / retention_blocks / check_after: the limits above (tests shorten them).
        search_time / search_poll: how long a recovering node looks for its channel peers in gossip,
            and how often it looks at the gossip again.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        channels_app: str = "channels",
        chain_app: str = "chain",
        gossip_app: str = "gossip",
        provide: bool = True,
        recover: bool = False,
        write_interval: float = WRITE_INTERVAL,
        retention_blocks: int = RETENTION_BLOCKS,
        check_after: float = CHECK_AFTER,
        search_time: float = SEARCH_TIME,
        search_poll: float = POLL_INTERVAL,
    ) -> None:
        super().__init__("peer_storage", protocol=True, feature_bit=PROVIDE_STORAGE_BIT if provide else None)
        self.directory = Path(directory)
        self.channels_app_name = channels_app
        self.chain_app_name = chain_app
        self.gossip_app_name = gossip_app
        self.search_time = search_time
        self.search_poll = search_poll
        #: a peer returned our backup (decrypted) since the start: the search for channel peers stops
        self.backup_returned = False
        self._searching = False
        self.provide = provide
        self.recover = recover
        self.retention_blocks = retention_blocks
        self.check_after = check_after
        self.theirs = BlobStore(self.directory / "theirs")
        self.ours = BlobStore(self.directory / "ours")
        #: per peer, the digest (:func:`_digest`) of the channels of the latest backup we sent it
        self.sent = BlobStore(self.directory / "sent")
        self.schedule = WriteSchedule(write_interval)
        #: what the stores hold (sizes and headers; contents stay on disk)
        self.held: dict[bytes, StoredBlob] = {}
        self.kept: dict[bytes, StoredBlob] = {}
        #: the peers whose retrieval came on their current connection
        self._retrieved: set[bytes] = set()
        #: the peers warned of their retrieval on their current connection (one warning each)
        self._warned: set[bytes] = set()
        for call, fn in {"listpeerstorage": self.listpeerstorage, "restorechannels": self.restorechannels}.items():
            self.add_control_method(call, fn)

    def setup(self) -> None:
        self.add_handler(PeerStorage, self._on_storage, shield=True)
        self.add_handler(PeerStorageRetrieval, self._on_retrieval, shield=True)

    @property
    def channels(self) -> Any:
        """The channel app."""
        app = self.node.apps.get(self.channels_app_name)
        if app is None:
            raise AppError(f"the peer storage app needs the channel app {self.channels_app_name!r}")
        return app

    def _manager(self) -> Any:
        """The channel manager (None while the channel app is not running)."""
        return getattr(self.channels, "manager", None)

    def _with_channel(self) -> set[bytes]:
        """The peers with an open channel (not closed, not failed)."""
        manager = self._manager()
        if manager is None:
            return set()
        return {c.peer_id for c in manager.channels.values() if c.phase not in (Phase.CLOSED, Phase.FAILED)}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.held = await trio.to_thread.run_sync(self.theirs.load)
        self.kept = await trio.to_thread.run_sync(self.ours.load)
        await trio.to_thread.run_sync(self.sent.load)  # (makes its directory)
        self.channels.backup_watchers.append(self._backup_changed)
        log.info("peer storage: %s; holding %d peer blob(s), %d peer(s) hold ours", "offered" if self.provide else "not offered",
                 len(self.held), len(self.kept))  # fmt: skip
        try:
            await super().run(task_status=task_status)
        finally:
            self.channels.backup_watchers.remove(self._backup_changed)

    async def serve(self) -> None:
        """Forget blobs ``retention_blocks`` after their peer's last channel closed (checked each block)."""
        from lnpmsg.chain.events import BlockConnected

        if self.recover:
            self._start_search()
        chain = self.node.apps.get(self.chain_app_name)
        if chain is None:
            return
        async with chain.source.subscribe() as sub:
            await self._retain((await chain.source.tip()).height)
            async for event in sub:
                if isinstance(event, BlockConnected):
                    await self._retain(event.height)

    async def _retain(self, height: int) -> None:
        if self._manager() is None or not self.channels.running:
            # The channel app is starting: its manager exists before its channels are loaded, and every
            # peer would look channel-less (marked closed, on disk, by a start that may yet be refused).
            # The next block checks.
            return
        marks, deletes = retention(self.held, self._with_channel(), height, self.retention_blocks)
        for peer, closed_at in marks.items():
            await trio.to_thread.run_sync(self.theirs.mark_closed, peer, closed_at)
            blob = self.held[peer]
            self.held[peer] = StoredBlob(blob.size, blob.received, closed_at)
        for peer in deletes:
            await trio.to_thread.run_sync(self.theirs.delete, peer)
            del self.held[peer]
            self.schedule.forget(peer)
            log.info("peer storage: deleted the blob of %s, %d blocks after its last channel closed", peer.hex(), self.retention_blocks)

    # ------------------------------------------------------------ peers

    async def peer_ready(self, peer: Peer) -> None:
        """Give the peer its blob back (before the channel app's channel_reestablish); make sure
        a peer that keeps our backup has the current one."""
        node_id = peer.node_id
        self._retrieved.discard(node_id)
        self._warned.discard(node_id)
        blob = self.schedule.pending.get(node_id)
        if blob is None and node_id in self.held:
            blob = await trio.to_thread.run_sync(self.theirs.read, node_id)
        if blob is not None:
            try:
                await self.send(peer, PeerStorageRetrieval(blob=blob))
            except Exception as exc:  # gone already: sent on its next connection
                log.debug("peer storage: cannot send %s its blob: %s", node_id.hex()[:16], exc)
            else:
                log.debug("peer storage: sent %s its blob (%d bytes)", node_id.hex()[:16], len(blob))
        if _offers_storage(peer) and self._our_entries(node_id) is not None:
            self.spawn(self._check_later, peer)
        await super().peer_ready(peer)

    async def peer_gone(self, peer: Peer, reason: str) -> None:
        self._retrieved.discard(peer.node_id)
        self._warned.discard(peer.node_id)
        await super().peer_gone(peer, reason)

    async def _check_later(self, peer: Peer) -> None:
        """A peer that sent no retrieval on this connection does not hold our backup: send it."""
        await trio.sleep(self.check_after)
        if self.node.peers.get(peer.node_id) is peer and peer.node_id not in self._retrieved:
            await self._send_backup(peer.node_id, "it sent none back")

    # ------------------------------------------------------------ providing

    async def _on_storage(self, peer: Peer, msg: PeerStorage) -> None:
        node_id = peer.node_id
        if not self.provide:
            log.debug("peer storage: %s sent peer_storage; not offered here: ignored", node_id.hex()[:16])
            return
        if len(msg.blob) > PEER_BLOB_SIZE:
            log.debug("peer storage: %s sent a %d-byte blob (the limit is %d): ignored", node_id.hex()[:16], len(msg.blob), PEER_BLOB_SIZE)
            return
        if node_id not in self._with_channel():
            log.debug("peer storage: %s has no open channel with us: its blob is not stored", node_id.hex()[:16])
            return
        delay = self.schedule.offer(node_id, msg.blob, trio.current_time())
        if delay is None:
            log.debug("peer storage: a newer blob of %s replaces the one waiting", node_id.hex()[:16])
        elif delay == 0:
            await self._write(node_id)
        else:
            log.debug("peer storage: the blob of %s is written in %.0f s (one write a minute)", node_id.hex()[:16], delay)
            self.spawn(self._write_later, node_id, delay)

    async def _write_later(self, node_id: bytes, delay: float) -> None:
        await trio.sleep(delay)
        await self._write(node_id)

    async def _write(self, node_id: bytes) -> None:
        blob = self.schedule.take(node_id, trio.current_time())
        if blob is None:
            return
        received = time.time()
        try:
            await trio.to_thread.run_sync(self.theirs.write, node_id, blob, received)
        except OSError as exc:
            log.error("peer storage: cannot store the blob of %s: %s", node_id.hex(), exc)
            return
        self.held[node_id] = StoredBlob(len(blob), received)
        log.debug("peer storage: stored %d bytes for %s", len(blob), node_id.hex()[:16])

    # ------------------------------------------------------------ using

    def _our_entries(self, peer_id: bytes) -> list[BackupEntry] | None:
        """Our backup's entries in the order a blob for ``peer_id`` holds them (its channels
        first); None without a channel with that peer (then nothing is sent to it)."""
        manager = self._manager()
        if manager is None or not manager.of_peer(peer_id):
            return None  # (checked first: building the entries takes every channel)
        entries = self.channels.backup_entries()
        mine = [e for e in entries if e.peer_id == peer_id]
        return mine + [e for e in entries if e.peer_id != peer_id] if mine else None

    async def _send_backup(self, peer_id: bytes, why: str) -> None:
        entries = self._our_entries(peer_id)
        if entries is None:
            return
        seed = self._manager().seed
        kept = await self._kept_entries(peer_id, seed) if peer_id in self.kept else []
        if self._manager() is None:
            return  # (the channel app stopped while we read what the peer keeps: the node is stopping)
        if lost := self.channels.lacking(kept):
            # (a node that lost its data and opened a new channel before restoring must not replace
            # the only copy of its old channels)
            log.warning("peer storage: %s holds %d channel(s) this node lacks: not replacing its copy until they are "
                        "restored ('lnpmsg restorechannels --from-peers')", peer_id.hex()[:16], len(lost))  # fmt: skip
            return
        blob, count = encode_padded(entries, seed, os.urandom(12))
        if count < len(entries):
            log.warning("peer storage: our backup does not fit in one blob: %s keeps %d of %d channels (its own first)",
                        peer_id.hex()[:16], count, len(entries))  # fmt: skip
        try:
            await self.send(peer_id, PeerStorage(blob=blob))
        except Exception as exc:  # gone again: the next connection checks
            log.info("peer storage: cannot send our backup to %s: %s", peer_id.hex()[:16], exc)
            return
        log.info("peer storage: sent our backup (%d channel(s)) to %s: %s", count, peer_id.hex()[:16], why)
        try:
            await trio.to_thread.run_sync(self.sent.write, peer_id, _digest(entries[:count]), time.time())
        except OSError as exc:  # (only the check of what the peer returns is lost)
            log.error("peer storage: cannot note the backup sent to %s: %s", peer_id.hex(), exc)

    def _backup_changed(self, entries: list[BackupEntry]) -> None:
        if not self.running:
            return
        for peer_id in {e.peer_id for e in entries}:
            peer = self.node.peers.get(peer_id)
            if peer is not None and peer.is_ready and _offers_storage(peer):
                self.spawn(self._send_backup, peer_id, "our channels changed")

    async def _on_retrieval(self, peer: Peer, msg: PeerStorageRetrieval) -> None:
        node_id = peer.node_id
        self._retrieved.add(node_id)
        manager = self._manager()
        if manager is None:
            return
        latest = await trio.to_thread.run_sync(self.sent.read, node_id)
        try:
            held = decode_backup(msg.blob, manager.seed)
        except BackupError as exc:
            log.info("peer storage: %s returned a blob (%d bytes) that is not our backup: ignored (%s)", node_id.hex()[:16], len(msg.blob), exc)
            held = None
            await self._warn(peer, "peer_storage_retrieval: the blob returned is not our backup (it does not decrypt with our key)")
        else:
            self.backup_returned = True
        keep = held is not None
        if held is not None and latest is not None and _digest(held) != latest:
            log.info("peer storage: %s returned an older copy of our backup than the latest we sent it", node_id.hex()[:16])
            await self._warn(peer, "peer_storage_retrieval: the blob returned is older than the latest peer_storage we sent")
            keep = _digest(await self._kept_entries(node_id, manager.seed)) != latest
            if not keep:
                log.info("peer storage: keeping the latest copy %s returned before, not this one", node_id.hex()[:16])
        if keep:
            await self._keep(node_id, msg.blob)
        wanted = self._our_entries(node_id)
        if wanted is not None:
            sent_count = encode_padded(wanted, manager.seed, bytes(12))[1]
            if held is None or _plain(held) != _plain(wanted[:sent_count]):
                log.info("peer storage: %s holds %s of our backup: sending the current one", node_id.hex()[:16],
                         "nothing" if held is None else "an outdated copy")  # fmt: skip
                await self._send_backup(node_id, "its copy was not current")
        if self._manager() is None:
            return  # (the channel app stopped meanwhile: the node is stopping)
        lacking = self.channels.lacking(held) if held else []
        if not lacking:
            return
        if self.recover:
            log.warning("peer storage: %s holds %d channel(s) this node lacks: restoring them (--recover-from-peers)", node_id.hex()[:16], len(lacking))
            await self.channels.restore_entries(lacking)
        else:
            log.warning("peer storage: %s holds %d channel(s) this node lacks (it lost its data?): "
                        "'lnpmsg restorechannels --from-peers' asks their peers to close and sweeps our balance",
                        node_id.hex()[:16], len(lacking))  # fmt: skip

    async def _warn(self, peer: Peer, text: str) -> None:
        """BOLT 1's warning on an outdated or irrelevant retrieval: at most one per connection (the connection stays)."""
        if peer.node_id in self._warned:
            return
        self._warned.add(peer.node_id)
        try:
            await self.send(peer, WarningMessage(channel_id=bytes(32), data=text.encode()))
        except Exception as exc:  # noqa: BLE001 - the peer may be gone; the log has the reason already
            log.debug("peer storage: warning to %s not sent: %s", peer.node_id.hex()[:16], exc)
            return
        log.info("peer storage: warned %s: %s", peer.node_id.hex()[:16], text)

    async def _keep(self, node_id: bytes, blob: bytes) -> None:
        """Keep the latest retrieval of our backup from each peer (what a restore from peers reads)."""
        if node_id in self.kept and await trio.to_thread.run_sync(self.ours.read, node_id) == blob:
            return
        received = time.time()
        try:
            await trio.to_thread.run_sync(self.ours.write, node_id, blob, received)
        except OSError as exc:
            log.error("peer storage: cannot keep the backup %s returned: %s", node_id.hex(), exc)
            return
        self.kept[node_id] = StoredBlob(len(blob), received)

    # ------------------------------------------------------------ control calls

    async def listpeerstorage(self) -> dict[str, Any]:
        """What we hold for peers (``held_for_peers``) and what peers returned to us (``held_by_peers``):
        sizes, times and channel counts, never contents."""
        manager = self._manager()
        with_channel = self._with_channel()
        held_by = []
        for peer_id, blob in sorted(self.kept.items()):
            entry: dict[str, Any] = {"peer_id": peer_id.hex(), "size": blob.size, "received": int(blob.received)}
            if manager is not None:
                entries = await self._kept_entries(peer_id, manager.seed)
                entry["channels"] = len(entries)
                entry["channels_lacking"] = len(self.channels.lacking(entries))
            held_by.append(entry)
        held_for = [
            {"peer_id": peer_id.hex(), "size": blob.size, "received": int(blob.received), "channel_open": peer_id in with_channel,
             "closed_at_height": blob.closed_at or None, "update_waiting": peer_id in self.schedule.pending}
            for peer_id, blob in sorted(self.held.items())
        ]  # fmt: skip
        return {"provides": self.provide, "held_for_peers": held_for, "held_by_peers": held_by}

    async def _kept_entries(self, peer_id: bytes, seed: bytes) -> list[BackupEntry]:
        blob = await trio.to_thread.run_sync(self.ours.read, peer_id)
        try:
            return decode_backup(blob, seed) if blob is not None else []
        except BackupError:
            return []

    async def restorechannels(self) -> dict[str, Any]:
        """Restore every channel that the backups peers returned to us hold and this node lacks
        (a node that lost its data dir): each peer is asked to force-close, our balance is swept."""
        manager = self._manager()
        if manager is None:
            raise AppError("the channel app is not running")
        found: dict[bytes, BackupEntry] = {}
        for peer_id in sorted(self.kept):
            for entry in await self._kept_entries(peer_id, manager.seed):
                found.setdefault(entry.channel_id, entry)
        lacking = self.channels.lacking(list(found.values()))
        if not lacking:
            looking = ""
            if not self.kept and self._start_search():
                gossip = self.node.apps.get(self.gossip_app_name)
                try:
                    so_far = f"{len(await channel_peers_in_gossip(gossip, self.node.node_id))} found so far"
                except Exception as exc:  # noqa: BLE001 - the gossip app is starting: the search looks again
                    so_far = f"the gossip cannot be read yet: {exc}"
                looking = (f"; looking for our channels' peers in gossip now ({so_far}): try again when one "
                           f"returned the backup ({PRIVATE_NOTE})")  # fmt: skip
            raise ParamsError(f"no peer returned a channel this node lacks ({len(self.kept)} peer(s) returned our backup){looking}")
        restored = await self.channels.restore_entries(lacking)
        return {"channels": await self.channels.restored_views(restored, lacking)}

    def _start_search(self) -> bool:
        """Look for our channels' peers in gossip and connect to them (once at a time); False without a gossip app."""
        gossip = self.node.apps.get(self.gossip_app_name)
        if gossip is None:
            log.warning("peer storage: recovering: no gossip app: our channels' peers cannot be looked up; "
                        "connect to them ('lnpmsg connect')")  # fmt: skip
            return False
        if not self._searching:
            self._searching = True
            self.spawn(self._search, gossip)
        return True

    async def _search(self, gossip: Any) -> None:
        try:
            await search(self.node, gossip, found_backup=lambda: self.backup_returned, search_time=self.search_time,
                         poll_interval=self.search_poll)  # fmt: skip
        finally:
            self._searching = False


def _offers_storage(peer: Peer) -> bool:
    remote = peer.session.remote_features
    return remote is not None and remote.supports(PROVIDE_STORAGE_BIT)


def _plain(entries: list[BackupEntry]) -> list[tuple[Any, ...]]:
    """Entries as compared (addresses aside: they change without the channels changing)."""
    return sorted((e.key, e.channel_id, e.short_channel_id, e.funding_outpoint) for e in entries)


def _digest(entries: list[BackupEntry]) -> bytes:
    """What a backup's channels are, in 32 bytes (as :func:`_plain` compares them; stable across runs)."""
    text = "\n".join(f"{key} {cid.hex()} {scid} {outpoint.txid.hex()}:{outpoint.vout}" for key, cid, scid, outpoint in _plain(entries))
    return hashlib.sha256(text.encode()).digest()
