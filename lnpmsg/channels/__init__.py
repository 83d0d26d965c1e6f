"""BOLT-3 channel transactions, composed from extensions (sans-IO, no chain access).

- :mod:`.keys`: per-commitment points, derived and revocation keys, obscured commitment numbers
- :mod:`.shachain`: per-commitment secret generation and compact storage
- :mod:`.script`: the BOLT-3 scripts
- :mod:`.spend`: spendable outputs, spend paths, signing plans, sweeps
- :mod:`.extensions`: the extension API (read its docstring first)
- :mod:`.commitment`: ``build_commitment``, the core that composes extensions
- :mod:`.bolt3`: the standard extensions (base, anchors, HTLCs)
- :mod:`.sweeps`: to_local/HTLC sweeps, penalties, closing transactions

The channel state machine (BOLT 2), sans-IO:

- :mod:`.messages`: the BOLT-2 messages (``register_channel_messages``)
- :mod:`.state`: ``ChannelCore``, ``receive(input, now) -> Output``, the phase table
- :mod:`.inputs`: commands, chain events, received messages; events, records, outputs
- :mod:`.params`: our secrets and limits, the open/accept checks, channel_type
- :mod:`.updates`: the two-sided update log and commitment contents
- :mod:`.commitments`: building, signing and checking both commitments
- :mod:`.normal`, :mod:`.reestablish`, :mod:`.close`, :mod:`.simple_close`,
  :mod:`.deadlines`: normal operation, reconnection, closing, HTLC deadlines
- :mod:`.ready`: channel_ready, short channel id aliases (option_scid_alias), zero-conf channels
- :mod:`.quiesce`: channel quiescence (``stfu``, option_quiesce)
- :mod:`.messages_v2`: interactive-tx and v2 establishment messages (``register_dual_fund_messages``)
- :mod:`.interactive_tx` + :mod:`.interactive_rules`: BOLT-2 interactive transaction construction,
  one negotiation as a sans-IO session (tx_add_* .. tx_complete, tx_signatures, tx_abort)
- :mod:`.records` + :mod:`.codec`: persistence records, replay, snapshots;
  :mod:`.store` is the file shell (not imported here: it does I/O)

Transactions, sighashes, signatures and generic scripts are
:mod:`lnpmsg.bitcoin`'s, the one model the chain layer and the wallet use too.

Importing the package loads none of these modules: each name is imported from its
module on first access (``lnpmsg node`` without a chain reads the channel options
and secrets, :mod:`.params`, and needs no commitment code).
"""

from typing import TYPE_CHECKING

from lnpmsg._lazy import lazy_exports

if TYPE_CHECKING:
    from .bolt3 import (
        LOCAL_ANCHOR,
        REMOTE_ANCHOR,
        TO_LOCAL,
        TO_REMOTE,
        AnchorsExtension,
        BaseExtension,
        Htlc,
        HtlcExtension,
        bolt3_extensions,
        delayed_output,
        funding_spendable,
        htlc_tag,
    )
    from .commitment import Commitment, build_commitment
    from .errors import ChannelError, LocalMisuse, RemoteFault, ShachainError
    from .extensions import (
        CommitmentContext,
        CommitmentExtension,
        CommitmentOutput,
        OutputSpec,
        TxFrame,
    )
    from .inputs import Output, Record
    from .keys import ChannelBasepoints, CommitmentKeys
    from .params import ChannelConfig, ChannelSecrets, OpeningPolicy
    from .shachain import ShachainStore, per_commitment_secret
    from .spend import (
        InputPlan,
        Sig,
        Spendable,
        SpendPath,
        SpendPlan,
        Value,
        build_spend,
        sweep,
    )
    from .state import ChannelCore, ChannelState, Phase
    from .sweeps import (
        closing_tx,
        htlc_claim,
        legacy_closing_tx,
        penalty_sweep,
        second_stage_penalty,
        second_stage_sweep,
        to_local_sweep,
        to_remote_sweep,
    )

#: each module's names, re-exported here on first access
_EXPORTS = {
    "bolt3": ("LOCAL_ANCHOR", "REMOTE_ANCHOR", "TO_LOCAL", "TO_REMOTE", "AnchorsExtension", "BaseExtension", "Htlc", "HtlcExtension", "bolt3_extensions", "delayed_output", "funding_spendable", "htlc_tag"),
    "commitment": ("Commitment", "build_commitment"),
    "errors": ("ChannelError", "LocalMisuse", "RemoteFault", "ShachainError"),
    "extensions": ("CommitmentContext", "CommitmentExtension", "CommitmentOutput", "OutputSpec", "TxFrame"),
    "inputs": ("Output", "Record"),
    "keys": ("ChannelBasepoints", "CommitmentKeys"),
    "params": ("ChannelConfig", "ChannelSecrets", "OpeningPolicy"),
    "shachain": ("ShachainStore", "per_commitment_secret"),
    "spend": ("InputPlan", "Sig", "Spendable", "SpendPath", "SpendPlan", "Value", "build_spend", "sweep"),
    "state": ("ChannelCore", "ChannelState", "Phase"),
    "sweeps": ("closing_tx", "htlc_claim", "legacy_closing_tx", "penalty_sweep", "second_stage_penalty", "second_stage_sweep", "to_local_sweep", "to_remote_sweep"),
}
__getattr__, __dir__ = lazy_exports(__name__, globals(), {name: f"{__name__}.{module}" for module, names in _EXPORTS.items() for name in names})

#: the modules of this package that are trio, file or CLI shells; every other
#: module is sans-IO and never imports one of these (tests/test_sans_io.py,
#: tests/test_channels_sans_io.py and tests/test_channels_extensions.py hold them to it)
SHELL_MODULES = frozenset({"store", "manager", "app", "commands", "options", "dev_calls", "onchain", "htlc_hook", "failures", "reconnect",
                           "backup_calls", "rescan", "chain_side", "peer_storage", "peer_storage_store", "peer_finder",
                           "dualfund_side", "quiesce_side", "splice_side", "monitor_files"})

__all__ = [
    "SHELL_MODULES",
    "LOCAL_ANCHOR",
    "REMOTE_ANCHOR",
    "TO_LOCAL",
    "TO_REMOTE",
    "AnchorsExtension",
    "BaseExtension",
    "ChannelBasepoints",
    "ChannelConfig",
    "ChannelCore",
    "ChannelError",
    "ChannelSecrets",
    "ChannelState",
    "Commitment",
    "CommitmentContext",
    "CommitmentExtension",
    "CommitmentKeys",
    "CommitmentOutput",
    "Htlc",
    "HtlcExtension",
    "InputPlan",
    "LocalMisuse",
    "OpeningPolicy",
    "Output",
    "OutputSpec",
    "Phase",
    "Record",
    "RemoteFault",
    "ShachainError",
    "ShachainStore",
    "Sig",
    "SpendPath",
    "SpendPlan",
    "Spendable",
    "TxFrame",
    "Value",
    "bolt3_extensions",
    "build_commitment",
    "build_spend",
    "closing_tx",
    "delayed_output",
    "funding_spendable",
    "htlc_claim",
    "htlc_tag",
    "legacy_closing_tx",
    "penalty_sweep",
    "per_commitment_secret",
    "second_stage_penalty",
    "second_stage_sweep",
    "sweep",
    "to_local_sweep",
    "to_remote_sweep",
]
