"""The chain RPC server's HTTP parsing (sans-IO): requests out of bytes in any
split, keep-alive, Expect: 100-continue, and every limit as an HttpError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnpmsg.chain.rpc_http import MAX_HEADER_BYTES, MAX_HEADERS, HttpError, RequestParser, response


def request(body: bytes = b"{}", *headers: str, version: str = "HTTP/1.1") -> bytes:
    head = [f"POST / {version}", "Host: x", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=30))
def test_requests_come_out_whole_however_the_bytes_are_split(cuts):
    stream = request(b'{"a": 1}') + request(b"[]", "Connection: close") + request(b"x" * 100)
    parser = RequestParser(max_body=1000)
    got = []
    position = 0
    for size in [*cuts, len(stream)]:
        parser.feed(stream[position : position + size])
        position += size
        while (r := parser.next_request()) is not None:
            got.append(r)
    assert [r.body for r in got] == [b'{"a": 1}', b"[]", b"x" * 100]
    assert [r.keep_alive for r in got] == [True, False, True]
    assert got[0].headers["host"] == "x" and got[0].method == "POST" and got[0].target == "/"
    assert not parser.started


def test_http_1_0_closes_unless_asked_and_continue_is_offered_once():
    parser = RequestParser(1000)
    parser.feed(request(b"{}", version="HTTP/1.0"))
    assert parser.next_request().keep_alive is False
    parser.feed(request(b"{}", "Connection: keep-alive", version="HTTP/1.0"))
    assert parser.next_request().keep_alive is True
    parser.feed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert parser.wants_continue() is True
    assert parser.wants_continue() is False
    parser.feed(b"hello")
    assert parser.next_request().body == b"hello"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nNoColon\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\n" + b"A: b\r\n" * (MAX_HEADERS + 1) + b"\r\n", 431),
        (b"POST / HTTP/1.1\r\nX: " + b"y" * MAX_HEADER_BYTES, 431),
    ],
)
def test_each_broken_rule_is_an_http_error(data, status):
    parser = RequestParser(1000)
    with pytest.raises(HttpError) as failure:
        parser.feed(data)
        parser.next_request()
    assert failure.value.status == status and failure.value.message


@settings(max_examples=300)
@given(st.binary(max_size=3000))
def test_any_bytes_give_requests_or_an_http_error(data):
    parser = RequestParser(2000)
    try:
        parser.feed(data)
        while parser.next_request() is not None:
            pass
    except HttpError as exc:
        assert 400 <= exc.status < 600


def test_responses():
    assert response(200, b"{}") == b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n{}"
    assert response(204, keep_alive=False) == b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
    assert b"WWW-Authenticate: Basic" in response(401, extra=(("WWW-Authenticate", 'Basic realm="jsonrpc"'),))
