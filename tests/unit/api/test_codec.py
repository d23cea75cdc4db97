"""The HTTP/1.1 codec on byte strings: request bytes, and each way a response body ends."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loom.api.codec import Request, ResponseParser, encode_request
from loom.api.errors import ProtocolError


def parse(*pieces: bytes, method: str = "GET", eof: bool = False) -> ResponseParser:
    parser = ResponseParser(method)
    for piece in pieces:
        parser.feed(piece)
    if eof:
        parser.feed_eof()
    return parser


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def test_a_request_has_host_connection_close_and_a_length_for_its_body() -> None:
    raw = encode_request(Request("PUT", "/v1/kv/a?cas=0", "127.0.0.1:8500",
                                 {"Content-Type": "application/json"}, b'{"x":1}'))
    assert raw == (
        b"PUT /v1/kv/a?cas=0 HTTP/1.1\r\nHost: 127.0.0.1:8500\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\nContent-Length: 7\r\n\r\n"
        b'{"x":1}'
    )


def test_a_get_without_body_sends_no_content_length_and_a_put_sends_zero() -> None:
    assert b"Content-Length" not in encode_request(Request("GET", "/", "h:1"))
    assert b"Content-Length: 0\r\n" in encode_request(Request("PUT", "/", "h:1"))


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ProtocolError, match="line break"):
        encode_request(Request("GET", "/", "h:1", {"X-Consul-Token": "a\r\nEvil: 1"}))


def test_a_content_length_body_is_complete_without_waiting_for_close() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Consul-Index: 42\r\n\r\nhello"
    parser = parse(*bytewise(data))
    assert parser.done
    response = parser.result()
    assert (response.status, response.reason, response.body) == (200, "OK", b"hello")
    assert response.header("x-consul-index") == "42"
    assert response.header("X-Consul-Index") == "42"


def test_a_chunked_body_is_joined_whatever_the_pieces_the_socket_delivers() -> None:
    data = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n"
            b"Trailer: x\r\n\r\n")
    for pieces in ([data], bytewise(data), [data[:40], data[40:41], data[41:]]):
        parser = parse(*pieces)
        assert parser.done
        assert parser.result().body == b"Wikipedia in \r\n\r\nchunks."


def test_a_chunked_body_is_not_complete_before_its_last_chunk() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    assert not parser.done
    with pytest.raises(ProtocolError, match="closed the connection in the middle of the body"):
        parser.feed_eof()


def test_a_body_without_length_or_chunking_ends_when_the_server_closes() -> None:
    parser = parse(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ", b"it")
    assert not parser.done
    parser.feed_eof()
    assert parser.result().body == b"all of it"


def test_head_204_and_304_answers_have_no_body_whatever_their_headers_say() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    assert parse(head, method="HEAD").done
    assert parse(b"HTTP/1.1 204 No Content\r\n\r\n").result().body == b""
    assert parse(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n").done


def test_an_interim_100_continue_is_skipped_for_the_real_answer() -> None:
    parser = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    assert (parser.result().status, parser.result().body) == (201, b"ok")


def test_a_truncated_content_length_body_is_an_error_at_close() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    with pytest.raises(ProtocolError, match="middle of the body"):
        parser.feed_eof()


def test_a_close_before_the_headers_end_is_an_error() -> None:
    with pytest.raises(ProtocolError, match="middle of the headers"):
        parse(b"HTTP/1.1 200 OK\r\nContent-Le", eof=True)


@pytest.mark.parametrize(("data", "message"), [
    (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not an HTTP/1.x response"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP/1.x response"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed response header"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 \xb2\xb2\xb2 OK\r\n\r\n", "not an HTTP/1.x response"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabX", "not followed by CRLF"),
])
def test_answers_that_are_not_http_are_refused_with_what_is_wrong(
    data: bytes, message: str
) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse(data)


def test_endless_headers_are_refused_instead_of_buffered() -> None:
    parser = ResponseParser()
    with pytest.raises(ProtocolError, match="longer than"):
        parser.feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000)


FUZZ = settings(max_examples=200, deadline=None, database=None)


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, rest = b"", body
    for size in sizes:
        if not rest:
            break
        piece, rest = rest[: max(size, 1)], rest[max(size, 1) :]
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    if rest:
        out += b"%x\r\n%s\r\n" % (len(rest), rest)
    return out + b"0\r\n\r\n"


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@FUZZ
@given(body=st.binary(max_size=300), sizes=st.lists(st.integers(1, 40), max_size=10),
       cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_any_body_in_any_framing_and_any_split_reads_back_unchanged(
    body: bytes, sizes: list[int], cuts: list[int]
) -> None:
    framings = {
        "chunked": b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, sizes),
        "length": b"Content-Length: %d\r\n\r\n" % len(body) + body,
        "close": b"\r\n" + body,
    }
    for name, rest in framings.items():
        parser = ResponseParser()
        for piece in split(b"HTTP/1.1 200 OK\r\n" + rest, cuts):
            parser.feed(piece)
        if name == "close":
            parser.feed_eof()
        assert parser.done, name
        assert parser.result().body == body, name


@FUZZ
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_are_a_response_or_a_protocol_error_never_a_crash(data: bytes) -> None:
    parser = ResponseParser()
    try:
        parser.feed(b"HTTP/1.1 200 OK\r\n" + data)
        parser.feed_eof()
    except ProtocolError:
        return
    assert parser.done
