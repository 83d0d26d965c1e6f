"""An Electrum protocol 1.4 server over the embedded regtest chain.

``index`` (sans-IO): headers and per-script-hash history, kept block by
block and mempool change by change; ``session`` (sans-IO): one client's
JSON-RPC lines in, lines out; ``server``: the trio shell (TCP, following the
chain in worker threads); ``app``: the node app behind ``--electrum-listen``.
"""
