"""docs/apps.md, "Loading your app into lnpmsg node": its app runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import trio

from lnpmsg.runtime import NodeSettings, build_node, load_app
from lnpmsg.testing.nodes import make_node, running

DOC = Path(__file__).resolve().parent.parent / "docs" / "apps.md"


def section_code() -> list[str]:
    text = DOC.read_text()
    start = text.index("Loading your app into lnpmsg node\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end != -1 else None], re.S)


async def test_the_documented_app_loads_and_answers(tmp_path: Path) -> None:
    module = tmp_path / "greeter_app.py"
    module.write_text(section_code()[0])
    app = load_app(f"{module}:app")
    factory = load_app(f"{module}:make_app")
    assert app.name == factory.name == "greeter" and app is not factory
    built = build_node(NodeSettings(data_dir=tmp_path / "n", listen=["127.0.0.1:0"], gossip=False, control=False, apps=[app]))
    other = make_node()
    other.mount(factory)
    async with built.running() as node, running(other):
        assert await app.control_methods["hello"](name="doc") == {"greeting": "hello, doc", "from": node.node_id.hex()}
        await node.connect(other.addresses[0])
        assert await app.control_methods["greet"](node_id=other.node_id.hex(), text="hi") == {"sent": True, "node_id": other.node_id.hex()}
        with trio.fail_after(10):
            while not (await factory.control_methods["received"]())["greetings"]:
                await trio.sleep(0.01)
        assert (await factory.control_methods["received"]())["greetings"] == [{"node_id": node.node_id.hex(), "text": "hi"}]


async def test_the_documented_program_prints_what_the_text_says(capsys) -> None:
    namespace: dict = {"__name__": "program"}
    exec(compile(section_code()[1], "program.py", "exec", dont_inherit=True), namespace)
    with trio.fail_after(60):
        await namespace["main"]()
    assert capsys.readouterr().out == "True ['control', 'mine', 'onion_messages', 'pubsub', 'rpc']\npong\n"
