"""From a channel's state to its monitor's updates (sans-IO).

The channel app persists the channel core's records; after each job, before
the job's messages leave, the shell asks :func:`updates_for` what the
channel state holds that the monitor does not yet know, persists those
updates and applies them. The translation is a difference between two
states, so it is idempotent: after a crash between the channel's record and
the monitor's update, the next call (at start) yields the missing updates.

- our commitment, as the peer signed it -> :class:`~.updates.LocalCommitment`
- the peer's commitments we signed (current and next) -> :class:`~.updates.RemoteCommitment`
- the peer's revocation secrets -> :class:`~.updates.RemoteRevocation`
- every ``update_fulfill_htlc`` preimage in flight, ours or theirs -> :class:`~.updates.PaymentPreimage`
- the peer proved we lost state -> :class:`~.updates.DataLossDetected` (its latest number and point)
"""

from __future__ import annotations

from lnpmsg.bitcoin.hashes import sha256

from ..bolt3 import Htlc
from ..messages import UpdateFulfillHtlc
from ..shachain import FIRST_INDEX, ShachainStore
from ..updates import CommitSpec
from .core import ChannelMonitor
from .signer import MonitorSecrets
from .updates import (
    ChannelSetup,
    DataLossDetected,
    LocalCommitment,
    PaymentPreimage,
    RemoteCommitment,
    RemoteRevocation,
    UpdateRecord,
)

__all__ = ["channel_setup", "monitor_secrets", "updates_for"]


def monitor_secrets(secrets: object) -> MonitorSecrets:
    """The monitor's secrets from a channel's :class:`~lnpmsg.channels.params.ChannelSecrets`."""
    return MonitorSecrets(
        funding=secrets.funding_privkey,  # type: ignore[attr-defined]
        revocation_basepoint=secrets.revocation_basepoint_secret,  # type: ignore[attr-defined]
        payment_basepoint=secrets.payment_basepoint_secret,  # type: ignore[attr-defined]
        delayed_payment_basepoint=secrets.delayed_payment_basepoint_secret,  # type: ignore[attr-defined]
        htlc_basepoint=secrets.htlc_basepoint_secret,  # type: ignore[attr-defined]
        commitment_seed=secrets.shachain_seed,  # type: ignore[attr-defined]
    )


def channel_setup(core: object, destination_script: bytes) -> ChannelSetup | None:
    """The monitor's first update, once the channel has a funding outpoint and a signed commitment."""
    s = core.state  # type: ignore[attr-defined]
    if s.funding_outpoint is None or s.remote is None or (s.local_commit is None and not s.restored):
        return None  # (a channel restored from a backup knows no commitment: it waits for the peer's)
    keys = core.keys()  # type: ignore[attr-defined]
    return ChannelSetup(
        funding_outpoint=keys.funding_outpoint, funding_sat=keys.funding_sat, anchors=keys.anchors,
        local_is_funder=keys.local_is_funder, local_basepoints=keys.local, remote_basepoints=keys.remote,
        local_to_self_delay=keys.local_to_self_delay, remote_to_self_delay=keys.remote_to_self_delay,
        local_dust_limit_sat=keys.local_dust_limit_sat, remote_dust_limit_sat=keys.remote_dust_limit_sat,
        obscuring_factor=keys.obscuring_factor, destination_script=destination_script,
    )  # fmt: skip


def _htlcs(spec: CommitSpec) -> tuple[Htlc, ...]:
    """A commitment's HTLCs from its owner's view (``offered``: the owner pays)."""
    return tuple(
        Htlc(h.add.id, not h.incoming, h.add.amount_msat, h.add.payment_hash, h.add.cltv_expiry) for h in spec.htlcs
    )


def updates_for(core: object, monitor: ChannelMonitor) -> list[UpdateRecord]:
    """What ``core``'s state holds that ``monitor`` does not know yet, in the order to apply it.

    ``monitor`` must have its :class:`ChannelSetup` already (see :func:`channel_setup`).
    """
    s = core.state  # type: ignore[attr-defined]
    out: list[UpdateRecord] = []
    local = s.local_commit
    known_local = monitor.local_commitment_number
    if local is not None and (known_local is None or local.number > known_local):
        out.append(LocalCommitment(
            commitment_number=local.number, to_local_msat=local.spec.to_local_msat,
            to_remote_msat=local.spec.to_remote_msat, feerate_per_kw=local.spec.feerate_per_kw,
            htlcs=_htlcs(local.spec), commitment_signature=local.signature,
            htlc_signatures=tuple(local.htlc_signatures),
        ))  # fmt: skip
    for remote in (s.remote_commit, s.remote_next_commit):
        if remote is not None and not monitor.has_remote_commitment(remote.number):
            out.append(RemoteCommitment(
                remote.number, remote.point, remote.spec.to_local_msat, remote.spec.to_remote_msat,
                remote.spec.feerate_per_kw, _htlcs(remote.spec),
            ))  # fmt: skip
    if s.remote_commit is not None and monitor.revocations_through < s.remote_commit.number:
        store = ShachainStore.restore(list(s.remote_secrets))
        for number in range(monitor.revocations_through, s.remote_commit.number):
            out.append(RemoteRevocation(number, store.lookup(FIRST_INDEX - number)))
    seen: set[bytes] = set()
    for update in s.local_changes.all() + s.remote_changes.all():
        if isinstance(update, UpdateFulfillHtlc):
            payment_hash = sha256(update.payment_preimage)
            if payment_hash not in seen and not monitor.knows_preimage(payment_hash):
                seen.add(payment_hash)
                out.append(PaymentPreimage(update.payment_preimage))
    if s.behind and s.remote_behind_point is not None and not monitor.data_loss:
        out.append(DataLossDetected(s.remote_behind_number, s.remote_behind_point))
    return out
