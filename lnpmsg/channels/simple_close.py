"""option_simple_close: ``closing_complete`` / ``closing_sig`` (BOLT 2 "Closing Negotiation").

When both sides offer ``option_simple_close``, there is no fee negotiation:
each side, as "closer", builds its own closing transaction paying its fee
from its own output and sends ``closing_complete`` with signatures of the
allowed variants (both outputs; only the closer's; only the closee's); the
other side picks the variant BOLT 2 prescribes, signs it and answers
``closing_sig``. Both transactions are valid and conflict; either may confirm.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from lnpmsg.bitcoin.script import is_op_return

from .commitments import compact_signature
from .errors import ChannelError, RemoteFault
from .inputs import ChannelClosed
from .messages import ClosingComplete, ClosingSig
from .params import check_shutdown_script
from .spend import SpendPlan
from .sweeps import closing_tx

if TYPE_CHECKING:
    from .close import ClosingState
    from .state import ChannelCore, _Out

__all__ = ["SIMPLE_CLOSE_FEATURE", "dust_threshold", "negotiated", "on_closing_complete", "on_closing_sig", "start"]

#: option_simple_close, either bit.
SIMPLE_CLOSE_FEATURE = 3 << 60
_BOTH = "closer_and_closee_outputs"
_CLOSER_ONLY = "closer_output_only"
_CLOSEE_ONLY = "closee_output_only"


def negotiated(core: ChannelCore) -> bool:
    """Both sides offered option_simple_close."""
    return bool(core.state.local_features & SIMPLE_CLOSE_FEATURE and core.state.remote_features & SIMPLE_CLOSE_FEATURE)


def dust_threshold(script_pubkey: bytes) -> int:
    """Bitcoin Core's dust threshold of an output script (BOLT 3 "Dust Limits")."""
    if is_op_return(script_pubkey):
        return 0
    if len(script_pubkey) == 25:
        return 546  # P2PKH
    if len(script_pubkey) == 23:
        return 540  # P2SH
    if script_pubkey[:1] == b"\x00":
        return 294 if len(script_pubkey) == 22 else 330  # P2WPKH, P2WSH
    return 354  # other witness versions


def _balances(core: ChannelCore) -> tuple[int, int]:
    spec = core.state.local_commit.spec  # type: ignore[union-attr]
    return spec.to_local_msat, spec.to_remote_msat


def _plan(core: ChannelCore, *, we_close: bool, closer_script: bytes | None, closee_script: bytes | None,
          fee_sat: int, locktime: int) -> SpendPlan:  # fmt: skip
    s = core.state
    assert s.funding_outpoint is not None and s.remote is not None
    local, remote = _balances(core)
    closer_msat, closee_msat = (local, remote) if we_close else (remote, local)
    return closing_tx(
        s.funding_outpoint, s.funding_sat,
        local_funding_pubkey=core.basepoints.funding_pubkey, remote_funding_pubkey=s.remote.basepoints.funding_pubkey,
        closer_script=closer_script, closee_script=closee_script, closer_msat=closer_msat, closee_msat=closee_msat,
        fee_sat=fee_sat, locktime=locktime,
    )  # fmt: skip


def _variant_scripts(variant: str, closer: bytes, closee: bytes) -> tuple[bytes | None, bytes | None]:
    if variant == _CLOSER_ONLY:
        return closer, None
    if variant == _CLOSEE_ONLY:
        return None, closee
    return closer, closee


def start(core: ChannelCore, closing: ClosingState, out: _Out) -> ClosingState:
    """Send our closing_complete (if our balance can pay a fee and leave something); returns the new state."""
    local_msat, remote_msat = _balances(core)
    weight = _plan(core, we_close=True, closer_script=closing.local_script, closee_script=closing.remote_script,
                   fee_sat=0, locktime=0).expected_weight()  # fmt: skip
    fee = weight * closing.feerate_per_kw // 1000
    if closing.max_fee_sat is not None:
        fee = min(fee, closing.max_fee_sat)
    ours_sat = local_msat // 1000 - fee
    theirs_sat = remote_msat // 1000
    if local_msat // 1000 < fee:
        return replace(closing, our_close_done=True)  # nothing of ours to close with: the peer's close will do
    ours_dust = ours_sat < dust_threshold(closing.local_script) and not is_op_return(closing.local_script)
    theirs_dust = theirs_sat < dust_threshold(closing.remote_script)
    if local_msat < remote_msat:
        variants = [_CLOSEE_ONLY] if ours_dust else [_BOTH]
    else:
        variants = [_CLOSER_ONLY] if theirs_dust else [_CLOSER_ONLY, _BOTH]
    signatures = {}
    for variant in variants:
        closer, closee = _variant_scripts(variant, closing.local_script, closing.remote_script)
        plan = _plan(core, we_close=True, closer_script=closer, closee_script=closee, fee_sat=fee, locktime=0)
        signatures[variant] = compact_signature(plan.sign(0, "local_funding", core.secrets.funding_privkey))
    msg = ClosingComplete(
        channel_id=core.state.channel_id, closer_scriptpubkey=closing.local_script,
        closee_scriptpubkey=closing.remote_script, fee_satoshis=fee, locktime=0,
        tlvs=ClosingComplete.tlv_stream(signatures),
    )  # fmt: skip
    out.send(msg)
    return replace(closing, sent_complete=msg)


def on_closing_complete(core: ChannelCore, msg: ClosingComplete, out: _Out) -> ClosingState:
    """As closee: check, pick the variant, sign, answer closing_sig, and emit the transaction."""
    from .close import _closing

    closing = _closing(core)
    local_msat, remote_msat = _balances(core)
    if msg.fee_satoshis > remote_msat // 1000:
        raise RemoteFault("closing_complete fee above the closer's balance", warning=True)
    if msg.closee_scriptpubkey != closing.local_script:
        raise RemoteFault("closing_complete for a script of ours we did not send", warning=True)
    check_shutdown_script(msg.closer_scriptpubkey, anysegwit=True, simple_close=True)
    ours_sat = local_msat // 1000
    if ours_sat < dust_threshold(closing.local_script) and not is_op_return(closing.local_script):
        variant = _CLOSER_ONLY
    elif _BOTH in msg.tlvs:
        variant = _BOTH
    else:
        variant = _CLOSEE_ONLY
    if variant not in msg.tlvs:
        raise RemoteFault(f"closing_complete lacks the {variant} signature", warning=True)
    closer, closee = _variant_scripts(variant, msg.closer_scriptpubkey, msg.closee_scriptpubkey)
    try:
        plan = _plan(core, we_close=False, closer_script=closer, closee_script=closee,
                     fee_sat=msg.fee_satoshis, locktime=msg.locktime)  # fmt: skip
    except ChannelError as exc:
        raise RemoteFault(f"closing_complete: {exc}", warning=True) from None
    if not plan.verify(0, "remote_funding", msg.tlvs[variant]):
        raise RemoteFault("closing_complete signature does not verify", warning=True)
    ours = plan.sign(0, "local_funding", core.secrets.funding_privkey)
    tx = plan.finalize({"local_funding": ours, "remote_funding": msg.tlvs[variant]})
    out.send(
        ClosingSig(
            channel_id=msg.channel_id, closer_scriptpubkey=msg.closer_scriptpubkey,
            closee_scriptpubkey=msg.closee_scriptpubkey, fee_satoshis=msg.fee_satoshis, locktime=msg.locktime,
            tlvs=ClosingSig.tlv_stream({variant: compact_signature(ours)}),
        )
    )  # fmt: skip
    out.emit(ChannelClosed(tx.serialize(), plan.fee_sat))
    return replace(closing, remote_script=msg.closer_scriptpubkey, their_close_done=True)


def on_closing_sig(core: ChannelCore, msg: ClosingSig, out: _Out) -> ClosingState:
    """As closer: the closee's signature of one variant we offered: our transaction is complete."""
    from .close import _closing

    closing = _closing(core)
    sent = closing.sent_complete
    if not isinstance(sent, ClosingComplete):
        raise RemoteFault("closing_sig without a closing_complete", warning=True)
    same = (msg.closer_scriptpubkey, msg.closee_scriptpubkey, msg.fee_satoshis, msg.locktime) == (
        sent.closer_scriptpubkey, sent.closee_scriptpubkey, sent.fee_satoshis, sent.locktime)  # fmt: skip
    if not same:
        raise RemoteFault("closing_sig does not match our closing_complete", warning=True)
    if len(msg.tlvs) != 1 or next(iter(msg.tlvs)) not in sent.tlvs:
        raise RemoteFault("closing_sig needs exactly one signature of a variant we offered", warning=True)
    variant = next(iter(msg.tlvs))
    closer, closee = _variant_scripts(variant, sent.closer_scriptpubkey, sent.closee_scriptpubkey)
    plan = _plan(core, we_close=True, closer_script=closer, closee_script=closee,
                 fee_sat=sent.fee_satoshis, locktime=sent.locktime)  # fmt: skip
    if not plan.verify(0, "remote_funding", msg.tlvs[variant]):
        raise RemoteFault("closing_sig signature does not verify", warning=True)
    tx = plan.finalize({"local_funding": sent.tlvs[variant], "remote_funding": msg.tlvs[variant]})
    out.emit(ChannelClosed(tx.serialize(), plan.fee_sat))
    return replace(closing, our_close_done=True)
