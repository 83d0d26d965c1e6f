"""Protocol cores stay sans-IO, and the packages depend on each other one way.

Three checks:

- no core module *names* an I/O library, an event loop or the clock in its
  imports (read from the source, so it fails on the line that does it);
- importing a core in a fresh interpreter *loads* none of trio, pyzmq,
  sqlite3, stem or socket, not even through a package ``__init__``;
- the package-level import graph is acyclic and has only the arrows
  ``docs/architecture.md`` allows.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from lnpmsg.channels import SHELL_MODULES
from lnpmsg.onion_messages import SHELL_MODULES as ONION_MESSAGES_SHELL_MODULES
from lnpmsg.payments import SHELL_MODULES as PAYMENTS_SHELL_MODULES
from lnpmsg.payments.bolt12 import SHELL_MODULES as BOLT12_SHELL_MODULES

ROOT = Path(__file__).resolve().parent.parent / "lnpmsg"

#: modules named in a core's imports: I/O, event loops, the clock
FORBIDDEN_IMPORTS = {"trio", "socket", "zmq", "stem", "time", "asyncio", "select", "selectors", "socks", "sqlite3", "aioquic"}
#: modules that must not be in ``sys.modules`` after importing a core
FORBIDDEN_LOADED = {"trio", "zmq", "sqlite3", "stem", "socket", "asyncio", "aioquic"}

#: modules of a core package that are its trio shells, by the layout docs/architecture.md describes
#: shells by module name in every package, and the channel and payments packages' own lists
SHELL_NAMES = {"app", "manager", "store", "commands", "__main__"} | SHELL_MODULES | PAYMENTS_SHELL_MODULES | ONION_MESSAGES_SHELL_MODULES


def _modules(package: str, *, only: tuple[str, ...] = ()) -> list[str]:
    """The modules of ``lnpmsg.<package>`` (the package itself included), minus its shells."""
    directory = ROOT / package
    names = [f"lnpmsg.{package}"]
    for path in sorted(directory.glob("*.py")):
        if path.stem == "__init__" or path.stem in SHELL_NAMES:
            continue
        if only and path.stem not in only:
            continue
        names.append(f"lnpmsg.{package}.{path.stem}")
    return names


#: every protocol core, by module name
CORES = [
    *_modules("wire"),
    *_modules("noise"),
    *_modules("bitcoin"),
    *_modules("channels"),
    "lnpmsg.node.session",
    "lnpmsg.node.admission",
    "lnpmsg.transports.udp_retry",
    *_modules("gossip", only=("messages", "addresses", "verify", "sign", "graph", "graph_state", "decision", "sync", "checksum", "events", "errors", "cln_store", "announce", "routing", "resync", "progress_text")),
    *_modules("chain", only=("tx", "mining", "utxo", "mempool", "follow", "events", "errors")),
    *_modules("wallet", only=("coinselect", "errors")),
    *_modules("payments"),
    "lnpmsg.payments.onion",
    *_modules("onion_messages"),
    *(f"lnpmsg.payments.onion.{p.stem}" for p in sorted((ROOT / "payments" / "onion").glob("*.py")) if p.stem != "__init__"),
    "lnpmsg.payments.bolt12",
    *(f"lnpmsg.payments.bolt12.{p.stem}" for p in sorted((ROOT / "payments" / "bolt12").glob("*.py")) if p.stem not in ("__init__", *BOLT12_SHELL_MODULES)),
    "lnpmsg.rpc.control_proto",
    "lnpmsg.rpc.params",
    # the transport interface and the one address syntax (the CLI parses addresses without the I/O)
    "lnpmsg.transports.base",
    "lnpmsg.transports.address",
    # the ZeroMQ transport's wire convention (its sockets are in transports.zmq and its zmq_* modules)
    "lnpmsg.transports.zmq_wire",
]


def _path_of(module: str) -> Path:
    relative = Path(*module.split(".")[1:])
    package = ROOT / relative / "__init__.py"
    return package if package.exists() else (ROOT / relative).with_suffix(".py")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(path: Path) -> Iterator[tuple[str, int]]:
    """(absolute module name, line) of every import that runs (``if TYPE_CHECKING:`` blocks skipped)."""
    module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    if package.endswith(".__init__"):
        package = package[: -len(".__init__")]

    def visit(node: ast.AST) -> Iterator[tuple[str, int]]:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                yield ".".join([*base, *([node.module] if node.module else [])]), node.lineno
            else:
                yield node.module or "", node.lineno
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    yield from visit(ast.parse(path.read_text(), str(path)))


# ------------------------------------------------------------ what cores name


@pytest.mark.parametrize("module", CORES)
def test_core_module_names_no_io(module: str) -> None:
    path = _path_of(module)
    for name, line in _runtime_imports(path):
        assert name.split(".")[0] not in FORBIDDEN_IMPORTS, f"{path.relative_to(ROOT.parent)}:{line} imports {name}"


def test_the_core_list_covers_every_channels_and_gossip_core() -> None:
    assert {"lnpmsg.channels.bolt3", "lnpmsg.channels.shachain", "lnpmsg.channels.keys"} <= set(CORES)
    assert {"lnpmsg.gossip.messages", "lnpmsg.gossip.verify", "lnpmsg.gossip.graph", "lnpmsg.gossip.graph_state", "lnpmsg.gossip.decision", "lnpmsg.gossip.sync"} <= set(CORES)
    assert all(_path_of(module).exists() for module in CORES)


# ------------------------------------------------------- what cores load


_LOADER = """
import importlib, json, sys
forbidden = set(sys.argv[2].split(","))
found = {}
for name in sys.argv[1].split(","):
    importlib.import_module(name)
    loaded = sorted(m for m in forbidden if m in sys.modules)
    if loaded:
        found[name] = loaded
        break
print(json.dumps(found))
"""


def test_importing_a_core_loads_no_io_library() -> None:
    # One fresh interpreter imports the cores one by one and stops at the first
    # that loaded a forbidden module: that core (or a package __init__ it
    # passes through) is named in the failure.
    result = subprocess.run(
        [sys.executable, "-c", _LOADER, ",".join(CORES), ",".join(sorted(FORBIDDEN_LOADED))],
        check=True,
        capture_output=True,
        text=True,
    )
    assert json.loads(result.stdout) == {}


def test_a_shell_still_loads_its_io_so_the_check_above_can_fail() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _LOADER, "lnpmsg.wire,lnpmsg.gossip.store", ",".join(sorted(FORBIDDEN_LOADED))],
        check=True,
        capture_output=True,
        text=True,
    )
    assert set(json.loads(result.stdout)["lnpmsg.gossip.store"]) >= {"trio", "sqlite3"}


def test_package_names_stay_public_through_lazy_exports() -> None:
    code = (
        "import sys, lnpmsg.gossip as g, lnpmsg.chain as c, lnpmsg.wallet as w; "
        "assert 'trio' not in sys.modules and 'sqlite3' not in sys.modules; "
        "names = [g.GossipApp, g.GossipStore, g.DB_FILE_NAME, c.ChainSource, c.catch_up, w.Wallet, w.GAP_LIMIT]; "
        "assert 'GossipApp' in dir(g) and 'Wallet' in dir(w); "
        "print('trio' in sys.modules, 'sqlite3' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert result.stdout.split() == ["True", "True"]
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        import lnpmsg.gossip

        _ = lnpmsg.gossip.Nope  # type: ignore[attr-defined]


@pytest.mark.parametrize("package", ["lnpmsg.channels", "lnpmsg.gossip", "lnpmsg.chain", "lnpmsg.wallet", "lnpmsg.transports.tor"])
def test_every_public_name_of_a_lazy_package_resolves(package: str) -> None:
    # A name in __all__ that its lazy table forgets (or sends to the wrong module) would
    # fail only when some caller first touches it: each one is touched here, in a fresh
    # process, and is the object its own module defines.
    code = (
        f"import importlib, {package} as p\n"
        "for name in p.__all__:\n"
        "    value = getattr(p, name)\n"
        "    home = getattr(value, '__module__', None)\n"
        "    if home and home.startswith(p.__name__ + '.'):\n"
        "        assert getattr(importlib.import_module(home), name, value) is value, name\n"
        "print(len(p.__all__))"
    )
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert int(result.stdout) > 0


# ---------------------------------------------------- the package graph

#: what each package (or top-level module) may import, as docs/architecture.md
#: draws it; ``_lazy`` and ``_hex`` are helpers every package may use
ALLOWED: dict[str, set[str]] = {
    "wire": set(),
    "noise": set(),
    "bitcoin": set(),
    "io": set(),
    # the core: bitcoin and wire; the shells (manager, app, commands): an app on the chain and wallet
    "channels": {"bitcoin", "wire", "app", "node", "chain", "wallet", "rpc", "io"},
    "transports": {"io"},
    "node": {"wire", "noise", "transports", "io"},
    "app": {"node", "wire"},
    "pubsub": {"app", "node", "io", "wire"},
    "rpc": {"app", "node", "pubsub", "io", "wire"},
    # the chain's servers (rpc_server, electrum/app) are apps on the contract; io: its files are
    # replaced as every store's are (io.atomic_file)
    "chain": {"bitcoin", "rpc", "app", "node", "transports", "wire", "io"},
    # payments: the routing graph the gossip app keeps current (routing.py); transports: the one
    # address syntax (announce.py reads the node's listen addresses); io: the announce app's
    # policy file (io.atomic_file)
    "gossip": {"app", "node", "wire", "bitcoin", "chain", "rpc", "payments", "transports", "channels", "io"},
    # io: its seed file is made as every secret file is (io.secret_file), its state replaced as
    # every store's file is (io.atomic_file)
    "wallet": {"app", "node", "wire", "bitcoin", "chain", "rpc", "io"},
    # the cores: wire and bitcoin; the shells (app, store, commands): an app on the channel app and the chain
    "payments": {"wire", "bitcoin", "app", "node", "channels", "rpc", "wallet"},
    # the cores: the payments' onion (Sphinx, route blinding) and wire; the shells: an app, its control calls
    "onion_messages": {"wire", "payments", "app", "node", "rpc"},
    # the kit may drive every layer it tests (fuzz_targets reaches each decoder a peer can reach)
    "testing": {"app", "node", "noise", "transports", "wire", "bitcoin", "channels", "io", "gossip", "pubsub", "rpc", "chain", "onion_messages", "payments"},
    "tor_app": {"app", "node", "transports", "wire"},
    # the composition root: it knows every app it mounts, and nothing below it imports it
    "runtime": {"app", "node", "transports", "wire", "rpc", "pubsub", "gossip", "chain", "wallet", "tor_app", "channels", "payments", "onion_messages"},
    "demo": {"app", "wire", "chain", "wallet", "runtime"},
    # the --dev-* options of lnpmsg node, parsed into channels.dev.DevOptions
    "dev_options": {"channels"},
    "cli": {"app", "node", "transports", "wire", "rpc", "pubsub", "gossip", "chain", "wallet", "tor_app", "io", "runtime", "demo", "dev_options", "channels", "payments", "onion_messages"},
}
HELPERS = {"_hex", "_lazy"}


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "lnpmsg" and len(parts) > 1 else None


def package_graph() -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> where (``file:line``), from every module's runtime imports."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        source = relative.parts[0].removesuffix(".py")
        if source == "__init__":
            continue
        for name, line in _runtime_imports(path):
            target = _package_of(name)
            if target and target != source:
                graph[source][target].append(f"{path.relative_to(ROOT.parent)}:{line}")
    return graph


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_every_package_is_placed_in_the_layers() -> None:
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    modules = {p.stem for p in ROOT.glob("*.py") if p.stem != "__init__"}
    unplaced = (packages | modules) - set(ALLOWED) - HELPERS
    assert not unplaced, f"new package(s) {sorted(unplaced)}: add them to ALLOWED here and to docs/architecture.md"


def test_the_allowed_layers_are_acyclic() -> None:
    assert _cycle(ALLOWED) is None


def test_package_imports_follow_the_architecture() -> None:
    graph = package_graph()
    wrong = {
        f"{source} -> {target}": where[:3]
        for source, targets in graph.items()
        for target, where in targets.items()
        if target not in ALLOWED.get(source, set()) | HELPERS
    }
    assert not wrong, f"imports against docs/architecture.md's arrows: {wrong}"
    assert _cycle({s: set(t) for s, t in graph.items()}) is None


def test_the_graph_check_sees_a_loop() -> None:
    assert _cycle({"chain": {"wallet"}, "wallet": {"chain"}}) == ["chain", "wallet", "chain"]
    graph = package_graph()
    assert "wallet" in graph and "chain" in graph["wallet"]  # the wallet follows the chain...
    assert "wallet" not in graph["chain"]  # ...and the chain never imports the wallet
