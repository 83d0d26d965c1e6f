"""A restored channel whose funding is already spent: its monitor reads the chain from the funding.

A node restored from a static channel backup (:mod:`.backup`) often restores long after its peer
went on chain without it (a peer force-closes a channel whose node went silent). A monitor that
read blocks only from the restore on would never see that commitment, never sweep our
to_remote, and the node would keep dialing the peer to ask for a close that happened long ago.

So a restored channel's monitor starts at the funding's confirmation height (the backup's short
channel id) when the chain says the funding output is no longer unspent (``get_txout``: what
both the embedded chain and Bitcoin Core answer without a transaction index), at the restore's
tip otherwise (any spend is then still to come, and the live blocks show it):

- at start (and after a restart in the middle of a scan) the monitor chain subscription simply
  starts at that height (:meth:`~.onchain.OnchainWatch.start_height`);
- on ``restorechannels`` the live stream is already past it (also when the restore comes while
  the node starts, after the live stream's subscription opened): :func:`catch_up` fetches the
  blocks from that height to the live stream's block by height (``block_hash`` then ``block``:
  what every chain source offers) and feeds them to the one monitor, which resolves and sweeps
  as it would have live, then hands it back to the live stream.

The work is bounded by the blocks from the funding to the tip, each parsed in a worker thread
(the trio loop stays free), with progress logged every :data:`LOG_EVERY` blocks. A backup made
before the funding confirmed has no short channel id: such a channel is read from the restore on
(logged).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg.bitcoin.block import Block
from lnpmsg.chain.errors import ChainError

if TYPE_CHECKING:
    from .onchain import OnchainWatch, WatchedChannel

__all__ = ["LOG_EVERY", "catch_up", "restored_start", "start_catch_up"]

log = logging.getLogger(__name__)

#: how often (blocks) a long scan says how far it is
LOG_EVERY = 1000
#: how long a scan waits before it asks a chain source that failed again (seconds)
RETRY_AFTER = 10.0


async def restored_start(source: Any, state: Any, default: int) -> int:
    """The first block a restored channel's monitor needs: the funding's confirmation height when
    the funding is no longer unspent, else ``default`` (also for a channel that is not restored)."""
    if not state.restored or state.funding_outpoint is None:
        return default
    try:
        unspent = await source.get_txout(state.funding_outpoint)
    except ChainError as exc:
        log.warning("onchain: %s: cannot tell whether the funding is spent (%s): read from the funding", state.channel_id.hex(), exc)
        unspent = None
    if unspent is not None:
        return default
    height = state.short_channel_id >> 40
    if not height:
        log.warning("onchain: %s: its funding is spent but the backup has no short channel id: "
                    "the spend is looked for from block %d on only", state.channel_id.hex(), default)  # fmt: skip
        return default
    return min(height, default)


def start_catch_up(watch: OnchainWatch, watched: WatchedChannel, nursery: trio.Nursery | None) -> None:
    """Start :func:`catch_up` in ``nursery`` (the live stream's, None before it runs) when the live
    stream is past ``watched``'s next block: a new monitor's, or one added after the live stream's
    subscription opened at start (a restore while the node starts), which it would never be fed."""
    if nursery is None or watch.read_to is None or watched.catching_up:
        return
    monitor = watched.monitor
    if (watched.start_height if monitor.height is None else monitor.height + 1) <= watch.read_to:
        watched.catching_up = True  # the live stream keeps off it meanwhile
        nursery.start_soon(catch_up, watch, watched)


async def catch_up(watch: OnchainWatch, watched: WatchedChannel) -> None:
    """Feed ``watched``'s monitor the blocks from its start to the live stream's, then let the live
    stream feed it (``watched.catching_up`` keeps the live stream off it meanwhile)."""
    channel_id = watched.channel.channel_id.hex()
    first = watched.start_height
    # a new channel's monitor (and a restored one's whose funding is unspent) starts at the live
    # stream's last block, read again here: only a scan from an earlier block (a restored channel
    # whose funding is spent, see restored_start; a spliced channel's, from the splice's block, where
    # the log line's "spent" is a maybe) is news
    level = logging.INFO if watch.read_to is not None and first < watch.read_to else logging.DEBUG
    try:
        feerate = await _feerate(watch)
        if level == logging.INFO:
            log.info("onchain: %s: its funding is spent: reading blocks %d to %s for the spend", channel_id, first, watch.read_to)
        else:
            log.debug("onchain: %s: reading block %d again (the live stream's last)", channel_id, first)
        while watch.watched.get(watched.channel.key) is watched:
            monitor = watched.monitor
            height = watched.start_height if monitor.height is None else monitor.height + 1
            if watch.read_to is None or height > watch.read_to:
                break  # caught up: the live stream's next block is this monitor's next one
            try:
                raw = await watch.chain.source.block_at(height)
                txs = (await trio.to_thread.run_sync(Block.parse, raw)).txs
            except ChainError as exc:
                log.warning("onchain: %s: cannot read block %d (%s): again in %gs", channel_id, height, exc, RETRY_AFTER)
                await trio.sleep(RETRY_AFTER)
                continue
            if monitor.height is not None and monitor.height != height - 1:
                continue  # a reorg moved it meanwhile: ask again for its next block
            await watch.feed(watched, height, txs, feerate)
            if (height - first) % LOG_EVERY == LOG_EVERY - 1:
                log.info("onchain: %s: read up to block %d of %s", channel_id, height, watch.read_to)
    finally:
        watched.catching_up = False  # (no await since the last check: the live stream's next block is ours)
    watch.note_done()  # the blocks the live stream passed by while this one caught up
    log.log(level, "onchain: %s: read blocks %d to %s; following the chain", channel_id, first, watch.read_to)


async def _feerate(watch: OnchainWatch) -> int | None:
    try:
        return int(await watch.chain.source.estimate_feerate())
    except ChainError:
        return None
