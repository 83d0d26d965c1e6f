"""A user app loaded into ``lnpmsg node``: a peer message, control calls and an event.

Load it into the daemon (from the root of a checkout, or give the file's path)::

    lnpmsg node --data-dir /tmp/g1 --listen 127.0.0.1:9811 --app examples.greeter_app:app
    lnpmsg node --data-dir /tmp/g2 --listen 127.0.0.1:9812 --app examples/greeter_app.py:app

and drive it with the ``lnpmsg`` command like any built-in app::

    lnpmsg --data-dir /tmp/g1 call greeter.hello '{"name": "alice"}'
    lnpmsg --data-dir /tmp/g1 connect NODEID_OF_G2@127.0.0.1:9812
    lnpmsg --data-dir /tmp/g1 call greeter.greet '{"node_id": "NODEID_OF_G2", "text": "hi"}'
    lnpmsg --data-dir /tmp/g2 call greeter.received
    lnpmsg --data-dir /tmp/g2 subscribe greeter.received     # one JSON line per greeting

Control calls (``lnpmsg call greeter.CALL '{params}'``):

- ``greeter.hello`` [name?]: a greeting from this node (no peer involved);
- ``greeter.greet`` [node_id, text?]: send a ``Greeting`` message to a connected peer;
- ``greeter.received`` [limit?]: the latest greetings peers sent us, newest last.

Every greeting received is also published as a ``greeter.received`` event
(node_id, text) on the node's event socket.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from lnpmsg.app import App
from lnpmsg.node.peer import Peer
from lnpmsg.wire import Message, message
from lnpmsg.wire.fields import u16_prefixed_bytes

#: odd: a peer without the greeter app ignores it instead of closing the connection (BOLT 1)
GREETING_TYPE = 32901
#: greetings kept for ``greeter.received``: a chatty peer cannot fill memory
MAX_KEPT = 100
#: bytes of text in one greeting
MAX_TEXT = 1000


@message(type=GREETING_TYPE)
@dataclass(frozen=True, slots=True)
class Greeting(Message):
    FIELDS = (("text", u16_prefixed_bytes),)
    text: bytes


@dataclass(frozen=True, slots=True)
class GreetingReceived:
    """The event published for each greeting (topic ``greeter.received``)."""

    topic = "greeter.received"
    node_id: bytes
    text: str


class GreeterError(Exception):
    """A greeting that cannot be sent (too long)."""


def make_app() -> App:
    """A fresh greeter app (``--app examples.greeter_app:make_app`` works too)."""
    app = App("greeter")
    app.message(Greeting)
    received: deque[dict[str, str]] = deque(maxlen=MAX_KEPT)

    @app.on(Greeting)
    async def on_greeting(peer: Peer, msg: Greeting) -> None:
        text = msg.text.decode(errors="replace")
        received.append({"node_id": peer.node_id.hex(), "text": text})
        app.node.events.publish(GreetingReceived(peer.node_id, text))

    @app.control()
    async def hello(name: str = "world") -> dict[str, Any]:
        """A greeting from this node."""
        return {"greeting": f"hello, {name}", "from": app.node.node_id.hex()}

    @app.control()
    async def greet(node_id: str, text: str = "hello") -> dict[str, Any]:
        """Send a greeting to a connected peer."""
        data = text.encode()
        if len(data) > MAX_TEXT:
            raise GreeterError(f"a greeting is at most {MAX_TEXT} bytes, got {len(data)}")
        await app.send(node_id, Greeting(text=data))
        return {"sent": True, "node_id": node_id}

    @app.control("received")
    async def received_greetings(limit: int = 20) -> dict[str, Any]:
        """The latest greetings peers sent us, newest last."""
        return {"greetings": list(received)[-limit:] if limit > 0 else []}
    return app


#: what ``--app examples.greeter_app:app`` mounts
app = make_app()
