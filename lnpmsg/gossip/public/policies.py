"""Our channels' fee policies, the announce app's part (a mixin of :class:`~lnpmsg.gossip.public.app.AnnounceApp`).

Each channel forwards under its own policy (``setchannelfee``, ``channels.setfee``), or the
default one (:attr:`AnnounceConfig.policy <lnpmsg.gossip.public.app.AnnounceConfig>`). The policies
are kept by a channel's routing id (a private channel's is our alias) in :data:`POLICY_FILE` next
to the channel store, written atomically; an unreadable file is logged and the defaults used until
it is fixed. After a change the previous policy is still accepted for ``policy_grace`` seconds
(BOLT 7: 10 minutes, :data:`POLICY_GRACE`) while payers learn the new one:
:meth:`FeePolicies.forwarding_policies` is what the payments app forwards by. ``listpolicies``
lists every channel's policy, and the peer's towards us for a private channel.

A public channel's routing id is our alias until its funding confirms (a zero-conf channel is in
use before that): a policy set then is kept under the alias, and follows the channel to its real
short channel id once that is known (:meth:`FeePolicies._follow_real_id`, at the announce app's
next look, saved; until then :meth:`FeePolicies.forwarding_policies` reads it under the alias), so
the channel_update announcing the channel carries the policy the user set. A splice gives a
channel a new short channel id: its policy follows it the same way.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg.app import AppError
from lnpmsg.channels.manager import format_scid
from lnpmsg.channels.ready import accepted_scids, routing_scid
from lnpmsg.channels.state import Phase
from lnpmsg.gossip.announce import FeePolicy
from lnpmsg.io.atomic_file import write_atomic
from lnpmsg.rpc.params import ParamsError

if TYPE_CHECKING:
    from lnpmsg.gossip.public.app import AnnounceApp

__all__ = ["OPEN_PHASES", "POLICY_FILE", "POLICY_GRACE", "FeePolicies"]

log = logging.getLogger("lnpmsg.gossip.public.app")

#: the fee policies, next to the channel store
POLICY_FILE = "policies.json"
#: BOLT 7: keep accepting a channel's previous parameters for 10 minutes after changing them
POLICY_GRACE = 600.0
#: the phases of a channel that forwards (and is announced, if public)
OPEN_PHASES = (Phase.NORMAL, Phase.SHUTDOWN, Phase.NEGOTIATING)


class FeePolicies:
    """Our channels' fee policies and their control calls (see the module docs); mixed into the announce app."""

    @property
    def _policy_path(self: AnnounceApp) -> Path:
        return Path(self.channels.directory) / POLICY_FILE

    def _load_policies(self: AnnounceApp) -> None:
        path = self._policy_path
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("announce: cannot read %s (%s): default fee policies until it is fixed", path, exc)
            return
        for key, fields in data.get("channels", {}).items():
            try:
                self.policies[int(key)] = FeePolicy(**fields)
            except (TypeError, ValueError) as exc:
                log.error("announce: %s: channel %s: %s", path, key, exc)

    def _save_policies(self: AnnounceApp) -> None:
        data = {"channels": {str(k): asdict(v) for k, v in sorted(self.policies.items())}}
        write_atomic(self._policy_path, json.dumps(data, indent=1).encode())

    def policy_of(self: AnnounceApp, scid: int) -> FeePolicy:
        return self.policies.get(scid, self.config.policy)

    def forwarding_policies(self: AnnounceApp, scid: int) -> list[FeePolicy]:
        """What a forward over our channel ``scid`` (or one of our aliases of it) may meet: the current
        policy, then earlier ones still in their grace period (``config.policy_grace`` after the change)."""
        manager = self.channels.manager
        found = next((c for c in manager.channels.values() if scid in accepted_scids(c.core.state)), None) if manager else None
        scid = routing_scid(found.core.state) if found is not None else scid
        alias = found.core.state.local_alias if found is not None else 0
        if alias and scid not in self.policies and alias in self.policies:
            scid = alias  # (set before the real id was known; the announce app's next look moves it)
        now = self.clock()
        earlier = [(p, until) for p, until in self._previous.get(scid, ()) if until > now]
        if earlier:
            self._previous[scid] = earlier
        else:
            self._previous.pop(scid, None)
        return [self.policy_of(scid), *(p for p, _ in earlier)]

    def _follow_real_id(self: AnnounceApp, state: Any) -> bool:
        """Move the policy (and the earlier ones in their grace period) kept under the channel's alias,
        or under its short channel id before a splice, to its routing id once that is the real short
        channel id; True when something moved (to save)."""
        scid = routing_scid(state)
        moved = False
        for old, why in ((state.local_alias, "before its funding confirmed"), (state.previous_short_channel_id, "before its splice")):
            if not old or not scid or scid == old or (old not in self.policies and old not in self._previous):
                continue
            if old in self.policies:
                policy = self.policies.pop(old)
                if scid not in self.policies:  # (one set under the real id meanwhile wins)
                    self.policies[scid] = policy
                    log.info("announce: the fee policy set for %s %s now follows its short channel id %s",
                             format_scid(old), why, format_scid(scid))  # fmt: skip
            if old in self._previous:
                self._previous.setdefault(scid, []).extend(self._previous.pop(old))
            moved = True
        return moved

    async def setchannelfee(
        self: AnnounceApp,
        channel: str = "all",
        fee_base_msat: int | None = None,
        fee_ppm: int | None = None,
        cltv_expiry_delta: int | None = None,
        htlc_minimum_msat: int | None = None,
        htlc_maximum_msat: int | None = None,
    ) -> dict[str, Any]:
        """Set the forwarding policy of one channel (id, short channel id, key) or ``all``; re-announce.

        Left-out fields keep their value. Returns each changed channel's policy.
        """
        manager = self.channels.manager
        if manager is None:
            raise AppError("the channels app is not running")
        if channel == "all":
            targets = [c for c in manager.channels.values() if c.phase in OPEN_PHASES and routing_scid(c.core.state)]
        else:
            try:
                targets = [manager.lookup(channel)]
            except KeyError:
                raise ParamsError(f"no channel {channel!r} (give a channel id, short channel id or key, or 'all')") from None
        changes = {
            k: v
            for k, v in {
                "fee_base_msat": fee_base_msat,
                "fee_proportional_millionths": fee_ppm,
                "cltv_expiry_delta": cltv_expiry_delta,
                "htlc_minimum_msat": htlc_minimum_msat,
                "htlc_maximum_msat": htlc_maximum_msat,
            }.items()
            if v is not None
        }
        for name, value in changes.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise ParamsError(f"{name} must be a whole number, got {value!r}")
        out = []
        new: dict[int, FeePolicy] = {}
        for target in targets:
            scid = routing_scid(target.core.state)
            if not scid:
                raise ParamsError(f"channel {target.channel_id.hex()} has no short channel id yet (wait for its confirmations)")
            try:
                new[scid] = replace(self.policy_of(scid), **changes)
            except ValueError as exc:
                raise ParamsError(str(exc)) from None
        until = self.clock() + self.config.policy_grace
        for scid, policy in new.items():
            old = self.policy_of(scid)
            if old != policy and self.config.policy_grace > 0:
                self._previous.setdefault(scid, []).append((old, until))
        self.policies.update(new)
        await trio.to_thread.run_sync(self._save_policies)
        for scid, policy in new.items():
            out.append({"short_channel_id": format_scid(scid), **asdict(policy)})
        self.kick()
        return {"channels": out}

    async def listpolicies(self: AnnounceApp) -> dict[str, Any]:
        """Every channel's fee policy and whether it is public."""
        manager = self.channels.manager
        out = []
        for channel in manager.channels.values() if manager is not None else ():
            scid = routing_scid(channel.core.state)
            if not scid:
                continue
            entry = {"short_channel_id": format_scid(scid), "public": scid in self._announced, **asdict(self.policy_of(scid))}
            peer = self.peer_updates.get(scid)
            if peer is not None:
                entry["peer_policy"] = {
                    "fee_base_msat": peer.fee_base_msat,
                    "fee_proportional_millionths": peer.fee_proportional_millionths,
                    "cltv_expiry_delta": peer.cltv_expiry_delta,
                    "htlc_minimum_msat": peer.htlc_minimum_msat,
                    "htlc_maximum_msat": peer.htlc_maximum_msat,
                    "timestamp": peer.timestamp,
                }
            out.append(entry)
        return {"default": asdict(self.config.policy), "channels": out}
