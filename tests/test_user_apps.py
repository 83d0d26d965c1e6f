"""``lnpmsg node --app``: a user app mounted into the daemon, driven with ``lnpmsg call``.

The nodes are real ``lnpmsg node`` processes; the control commands run as
a user runs them (one as its own process, the rest through ``main(argv)``
in a worker thread).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import trio

from cli_in_process import cli
from lnpmsg.app import App
from lnpmsg.runtime import NodeSettings, SettingsError, build_node, load_app
from lnpmsg.testing.processes import PROCESS_WAIT, finish_process, lnpmsg_argv

ROOT = Path(__file__).resolve().parent.parent
GREETER_FILE = ROOT / "examples" / "greeter_app.py"


@pytest.fixture
def tmp():
    # short: the control socket's path must fit in a unix socket address
    path = Path(tempfile.mkdtemp(prefix="lnapp", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def start_node(data_dir: Path, *args: str, cwd: Path) -> tuple[trio.Process, dict]:
    process = await trio.lowlevel.open_process(
        lnpmsg_argv("node", "--data-dir", data_dir, "--listen", "127.0.0.1:0", "--json", "--no-gossip", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
    )
    assert process.stdout is not None
    line = b""
    with trio.fail_after(PROCESS_WAIT):
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(1)
            if not chunk:
                code, stderr = await finish_process(process)
                raise AssertionError(f"lnpmsg node exited with {code}: {stderr}")
            line += chunk
    return process, json.loads(line)


async def test_greeter_app_in_two_daemons_driven_with_lnpmsg_call(capsys, tmp):
    # A loads the app as a module from the checkout's root, B from its file (run elsewhere)
    a, info_a = await start_node(tmp / "a", "--app", "examples.greeter_app:app", cwd=ROOT)
    b, info_b = await start_node(tmp / "b", "--app", f"{GREETER_FILE}:make_app", cwd=tmp)
    try:
        assert "greeter" in info_a["apps"] and "greeter" in info_b["apps"]
        hello = subprocess.run(
            lnpmsg_argv("--data-dir", tmp / "a", "call", "greeter.hello", '{"name": "alice"}'),
            capture_output=True, text=True, timeout=PROCESS_WAIT, check=False,
        )
        assert hello.returncode == 0, hello.stderr
        assert json.loads(hello.stdout) == {"greeting": "hello, alice", "from": info_a["node_id"]}

        code, out, _ = await cli(capsys, "connect", info_b["addresses"][0], "--data-dir", tmp / "a")
        assert code == 0, out
        subscriber = await trio.lowlevel.open_process(
            lnpmsg_argv("subscribe", "greeter.", "--count", "1", "--data-dir", tmp / "b"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert subscriber.stderr is not None and subscriber.stdout is not None
        with trio.fail_after(PROCESS_WAIT):  # printed once the subscription is live
            assert b"subscribed to 'greeter.'" in await subscriber.stderr.receive_some(1 << 16)
        params = json.dumps({"node_id": info_b["node_id"], "text": "hi from a"})
        code, out, err = await cli(capsys, "call", "greeter.greet", params, "--data-dir", tmp / "a")
        assert code == 0 and json.loads(out) == {"sent": True, "node_id": info_b["node_id"]}, err
        with trio.fail_after(PROCESS_WAIT):
            line = b""
            while chunk := await subscriber.stdout.receive_some(1 << 16):
                line += chunk
            assert await subscriber.wait() == 0
        event = json.loads(line)
        assert event["topic"] == "greeter.received"
        assert event["node_id"] == info_a["node_id"] and event["text"] == "hi from a"
        code, out, _ = await cli(capsys, "call", "greeter.received", '{"limit": 1}', "--data-dir", tmp / "b")
        assert code == 0 and json.loads(out) == {"greetings": [{"node_id": info_a["node_id"], "text": "hi from a"}]}
        code, out, err = await cli(capsys, "call", "greeter.greet", json.dumps({"node_id": "02" + "11" * 32}), "--data-dir", tmp / "a")
        assert code == 1 and "is not connected" in err
    finally:
        for process in (a, b):
            process.send_signal(2)
        results = [await finish_process(p) for p in (a, b)]
    for code, stderr in results:
        assert code == 0 and "mounted app greeter" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("examples.greeter_app", "expected MODULE:ATTR"),
        ("examples.no_such_module:app", "no module named 'examples.no_such_module'"),
        ("examples.greeter_app:nope", "examples.greeter_app has no attribute 'nope' (apps it defines: app)"),
        ("examples.greeter_app:MAX_KEPT", "int 100 is not an app"),
        ("examples.greeter_app:Greeting", "Greeting is a class but not an app class"),
        ("examples.greeter_app:Greeting.FIELDS", "tuple .* is not an app"),
        ("/no/such/file.py:app", "no such file: /no/such/file.py"),
    ],
)
def test_bad_app_specs_are_named(spec: str, message: str, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises(SettingsError, match=message.replace("(apps", r"\(apps").replace("app)", r"app\)")):
        load_app(spec)


def test_an_app_module_that_fails_to_import_says_where(tmp, monkeypatch) -> None:
    broken = tmp / "broken_app.py"
    broken.write_text("from lnpmsg.app import App\napp = App('broken')\n1 / 0\n")
    with pytest.raises(SettingsError, match=rf"running {broken} raised ZeroDivisionError: division by zero \(at {broken}:3\)"):
        load_app(f"{broken}:app")
    monkeypatch.chdir(tmp)
    with pytest.raises(SettingsError, match=r"importing broken_app raised ZeroDivisionError"):
        load_app("broken_app:app")


def test_a_bad_app_is_a_usage_error_without_traceback(tmp) -> None:
    result = subprocess.run(
        lnpmsg_argv("node", "--data-dir", tmp, "--listen", "127.0.0.1:0", "--no-gossip", "--app", "examples.greeter_app:nope"),
        capture_output=True, text=True, timeout=PROCESS_WAIT, cwd=ROOT, check=False,
    )
    assert result.returncode == 2 and "has no attribute 'nope'" in result.stderr and "Traceback" not in result.stderr
    twice = subprocess.run(
        lnpmsg_argv("node", "--data-dir", tmp, "--listen", "127.0.0.1:0", "--no-gossip", "--app", "examples.greeter_app:app", "--app", "examples.greeter_app:make_app"),
        capture_output=True, text=True, timeout=PROCESS_WAIT, cwd=ROOT, check=False,
    )
    assert twice.returncode == 2 and "cannot mount it: an app named 'greeter' is already mounted" in twice.stderr


async def test_build_node_takes_app_objects_and_factories(tmp) -> None:
    seen: list[NodeSettings] = []

    def factory(settings: NodeSettings) -> App:
        seen.append(settings)
        return App("made")

    settings = NodeSettings(data_dir=tmp, listen=["127.0.0.1:0"], gossip=False, control=False, apps=[App("plain"), factory, lambda: App("lazy")])
    built = build_node(settings)
    assert seen == [settings] and {"plain", "made", "lazy", "rpc", "pubsub", "onion_messages"} == set(built.node.apps)
    async with built.running() as node:
        summary = await built.summary()
        assert summary["addresses"] == node.addresses and summary["apps"] == ["lazy", "made", "onion_messages", "plain", "pubsub", "rpc"]
    with pytest.raises(SettingsError, match="is not an app"):
        build_node(NodeSettings(data_dir=tmp, apps=[42]))  # type: ignore[list-item]


def test_an_app_that_fails_to_start_stops_the_node_with_one_line(tmp) -> None:
    module = tmp / "fails_app.py"
    module.write_text(
        "import trio\nfrom lnpmsg.app import App\n\n\nclass Fails(App):\n"
        "    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):\n"
        "        raise RuntimeError('no database at /nowhere')\n\n\napp = Fails('fails')\n"
    )
    result = subprocess.run(
        lnpmsg_argv("node", "--data-dir", tmp / "n", "--listen", "127.0.0.1:0", "--no-gossip", "--app", f"{module}:app"),
        capture_output=True, text=True, timeout=PROCESS_WAIT, check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"cannot start: app 'fails' failed to start: RuntimeError: no database at /nowhere (at {module}:7)" in result.stderr
