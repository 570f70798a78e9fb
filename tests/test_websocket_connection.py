"""The WebSocket connection state machine, driven by bytes (no sockets).

One test per protocol violation, asserting the exact close code the connection owes the peer.
"""

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgiws.codec import build_close_payload, build_frame, parse_close_payload
from asgiws.websocket.connection import CloseReceived, Connection, Pong, State
from asgiws.websocket.deflate import DeflateSettings, PerMessageDeflate, negotiate
from asgiws.websocket.handshake import parse_extensions

MASK = b"\x11\x22\x33\x44"


def client_frame(opcode, payload=b"", fin=True, rsv1=False):
    return build_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=MASK)


def parse_server_frames(data):
    """Split the server's output into (opcode, payload) with the codec's client-side parser."""
    from asgiws.codec import FrameParser

    parser = FrameParser(is_server=False, max_size=1 << 30)
    return [(f.opcode, f.payload) for f in parser.feed_data(b"".join(data))]


def test_messages_and_fragments():
    conn = Connection(max_size=1 << 20)
    data = (client_frame(1, "hello") + client_frame(2, b"\x00\x01")
            + client_frame(1, "frag", fin=False) + client_frame(9, b"ping!")
            + client_frame(0, "ment", fin=False) + client_frame(0, "é"))
    assert conn.receive_data(data) == ["hello", b"\x00\x01", "fragmenté"]
    assert parse_server_frames(conn.data_to_send()) == [(0xA, b"ping!")]


def test_unsolicited_pong_is_an_event_not_a_message():
    conn = Connection(max_size=1 << 20)
    events = conn.receive_data(client_frame(0xA, b"x"))
    assert len(events) == 1 and isinstance(events[0], Pong)
    assert conn.data_to_send() == []


def test_peer_close_is_echoed():
    conn = Connection(max_size=1 << 20)
    events = conn.receive_data(client_frame(8, build_close_payload(1001, "bye")))
    assert isinstance(events[0], CloseReceived)
    assert (events[0].code, events[0].reason) == (1001, "bye")
    assert conn.state is State.CLOSED
    assert parse_server_frames(conn.data_to_send()) == [(8, b"\x03\xe9")]


def test_empty_close_gets_empty_echo_and_1005():
    conn = Connection(max_size=1 << 20)
    events = conn.receive_data(client_frame(8))
    assert events[0].code == 1005
    assert parse_server_frames(conn.data_to_send()) == [(8, b"")]


def test_server_initiated_close():
    conn = Connection(max_size=1 << 20)
    frame = conn.send_close(1000, "done")
    assert conn.state is State.CLOSING
    assert parse_server_frames([frame]) == [(8, build_close_payload(1000, "done"))]
    # Messages after our Close are dropped; the peer's Close completes the handshake.
    events = conn.receive_data(client_frame(1, "late") + client_frame(8, build_close_payload(1000)))
    assert [type(e) for e in events] == [CloseReceived]
    assert conn.state is State.CLOSED
    assert conn.data_to_send() == []


@pytest.mark.parametrize(
    "data, code",
    [
        (client_frame(1, "a")[:0] + bytes([0x81 | 0x40, 0x80]) + MASK, 1002),  # RSV1, no extension
        (bytes([0x81 | 0x20, 0x80]) + MASK, 1002),  # RSV2
        (bytes([0x81 | 0x10, 0x80]) + MASK, 1002),  # RSV3
        (bytes([0x83, 0x80]) + MASK, 1002),  # reserved data opcode
        (bytes([0x8B, 0x80]) + MASK, 1002),  # reserved control opcode
        (client_frame(9, b"x" * 126), 1002),  # control frame over 125 bytes
        (client_frame(9, b"x", fin=False), 1002),  # fragmented control frame
        (build_frame(1, "unmasked"), 1002),  # client frame without a mask
        (bytes([0x82, 0xFF]) + b"\x80" + b"\x00" * 7 + MASK, 1002),  # 64-bit length, top bit
        (client_frame(0, "x"), 1002),  # continuation with no message open
        (client_frame(1, "a", fin=False) + client_frame(1, "b"), 1002),  # new message while open
        (client_frame(8, b"\x03"), 1002),  # close payload of 1 byte
        (client_frame(8, b"\x03\xed"), 1002),  # close code 1005 on the wire
        (client_frame(8, b"\x03\xe7"), 1002),  # close code 999
        (client_frame(8, b"\x13\x88"), 1002),  # close code 5000
        (client_frame(8, b"\x03\xe8\xff"), 1007),  # non-UTF-8 close reason
        (client_frame(1, b"\xff"), 1007),  # invalid UTF-8 text
        (client_frame(1, b"\xce", fin=False) + client_frame(0, b"a"), 1007),  # bad in fragments
        (client_frame(1, b"\xce", fin=False) + client_frame(0, b""), 1007),  # cut off at the end
        (client_frame(2, b"x" * 101), 1009),  # frame over max_size
        (client_frame(2, b"x" * 60, fin=False) + client_frame(0, b"x" * 60), 1009),  # message
    ],
)
def test_violations(data, code):
    conn = Connection(max_size=100)
    conn.receive_data(data)
    assert conn.failure is not None
    assert conn.failure.code == code


def test_invalid_utf8_fails_on_the_fragment_that_carries_it():
    conn = Connection(max_size=1 << 20)
    assert conn.receive_data(client_frame(1, "ok", fin=False)) == []
    assert conn.failure is None
    conn.receive_data(client_frame(0, b"\xed\xa0\x80", fin=False))  # a surrogate: fail now
    assert conn.failure.code == 1007


def test_messages_before_a_violation_are_delivered():
    conn = Connection(max_size=1 << 20)
    events = conn.receive_data(client_frame(1, "first") + bytes([0x85, 0x80]) + MASK)
    assert events == ["first"]
    assert conn.failure.code == 1002
    # Nothing more is parsed after a violation.
    assert conn.receive_data(client_frame(1, "after")) == []


def deflate_connection(max_size=1 << 20):
    settings = DeflateSettings()
    params, _ = negotiate(parse_extensions([b"permessage-deflate"]), settings)
    return Connection(max_size=max_size, deflate=PerMessageDeflate(params, settings))


def client_deflate(data):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


def test_compressed_messages():
    conn = deflate_connection()
    compressed = client_deflate("héllo".encode() * 20)
    half = len(compressed) // 2
    events = conn.receive_data(
        client_frame(1, compressed, rsv1=True)
        + client_frame(2, compressed[:half], fin=False, rsv1=True) + client_frame(0, compressed[half:]))
    assert events == ["héllo" * 20, "héllo".encode() * 20]
    # Outgoing messages are compressed with RSV1 set.
    frame = conn.send_message("x" * 1000)
    assert frame[0] == 0xC1 and len(frame) < 100


def test_small_messages_go_uncompressed():
    """Below compress_min_size a message goes out as it is, RSV1 clear, and stays out of the
    context: the client's inflater, which never sees it, still reads the next compressed one."""
    conn = deflate_connection()
    inflater = zlib.decompressobj(-12)
    small = "x" * (DeflateSettings().compress_min_size - 1)
    assert conn.send_message(small) == bytes([0x81, len(small)]) + small.encode()
    for message in ("y" * 200, small.encode(), "y" * 200):
        frame = conn.send_message(message)
        if frame[0] & 0x40:  # RSV1: compressed
            assert inflater.decompress(frame[2:] + b"\x00\x00\xff\xff") == message.encode()
        else:
            assert frame[2:] == message


def test_compressed_bomb_closes_1009_without_inflating_it_all():
    conn = deflate_connection(max_size=1 << 16)
    conn.receive_data(client_frame(2, client_deflate(b"\x00" * (50 << 20)), rsv1=True))
    assert conn.failure.code == 1009


def test_compressed_invalid_utf8_1007():
    conn = deflate_connection()
    conn.receive_data(client_frame(1, client_deflate(b"\xff\xfe"), rsv1=True))
    assert conn.failure.code == 1007


def test_rsv1_on_continuation_1002():
    conn = deflate_connection()
    conn.receive_data(client_frame(2, client_deflate(b"ab"), fin=False, rsv1=True)
                      + client_frame(0, b"", rsv1=True))
    assert conn.failure.code == 1002


def stepped_deflate_connection(max_size=1 << 20, inflate_step=1 << 20):
    settings = DeflateSettings()
    params, _ = negotiate(parse_extensions([b"permessage-deflate"]), settings)
    return Connection(max_size=max_size, deflate=PerMessageDeflate(params, settings),
                      inflate_step=inflate_step)


def receive_all(conn, data):
    """Feed `data`, then resume() until the connection has nothing left: the events and how
    many calls it took."""
    events = conn.receive_data(data)
    calls = 1
    while conn.more:
        events += conn.resume()
        calls += 1
    return events, calls


def test_a_compressed_message_inflates_a_step_per_call_then_the_frames_behind_it():
    conn = stepped_deflate_connection(max_size=8 << 20, inflate_step=1 << 20)
    message = bytes(range(256)) * (10 << 10)  # 2.5 MiB, from a few KiB compressed
    data = (client_frame(2, client_deflate(message), rsv1=True) + client_frame(9, b"p")
            + client_frame(1, client_deflate(b"after"), rsv1=True))
    assert conn.receive_data(data) == [] and conn.more
    assert not conn.outgoing  # the Ping behind the message waits for it
    assert conn.resume() == [] and conn.more
    assert conn.resume() == [message, "after"] and not conn.more
    assert parse_server_frames(conn.data_to_send()) == [(10, b"p")]


def test_a_deflate_bomb_is_refused_1009_a_step_at_a_time():
    conn = stepped_deflate_connection(max_size=4 << 20, inflate_step=1 << 20)
    events, calls = receive_all(conn, client_frame(2, client_deflate(b"\x00" * (50 << 20)),
                                                   rsv1=True))
    assert events == [] and conn.failure.code == 1009
    assert calls == 5  # 4 MiB in 1 MiB steps, then the byte over
    # The 4 MiB inflated so far and the zlib stream go at the failure, not when TCP closes (a
    # close timeout or a linger later): one bomb after another never holds two.
    assert conn._inflated is None and conn.deflate._decompressor is None
    assert conn.receive_data(client_frame(2, client_deflate(b"late"), rsv1=True)) == []


def test_invalid_utf8_in_a_stepped_text_message_1007_at_the_step_that_carries_it():
    conn = stepped_deflate_connection(max_size=1 << 20, inflate_step=1000)
    text = "é".encode() * 1000 + b"\xff" + b"a" * 5000
    events, calls = receive_all(conn, client_frame(1, client_deflate(text), rsv1=True))
    assert events == [] and conn.failure.code == 1007
    assert calls == 3  # bytes 2000-2999 hold the 0xff


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_stepped_inflation_delivers_what_one_call_does(data):
    """Whatever the step, the messages, their order and the Pongs are those of unbounded
    inflation; only the number of calls differs."""
    step = data.draw(st.integers(1, 5000), label="inflate_step")
    messages = data.draw(st.lists(st.one_of(st.binary(max_size=3000),
                                            st.text(max_size=1500)), max_size=6))
    wire = b""
    for i, message in enumerate(messages):
        raw = message.encode() if isinstance(message, str) else message
        raw = raw * data.draw(st.integers(1, 8))
        messages[i] = raw.decode() if isinstance(message, str) else raw
        compressed = client_deflate(raw)
        opcode = 1 if isinstance(message, str) else 2
        cuts = sorted(data.draw(st.lists(st.integers(0, len(compressed)), max_size=3)))
        pieces = [compressed[a:b] for a, b in zip([0] + cuts, cuts + [len(compressed)])]
        for j, piece in enumerate(pieces):
            wire += client_frame(opcode if j == 0 else 0, piece, fin=j == len(pieces) - 1,
                                 rsv1=j == 0)
        wire += client_frame(9, bytes([i]))
    expected = receive_all(stepped_deflate_connection(inflate_step=None), wire)[0]
    assert expected == messages
    events, _ = receive_all(stepped_deflate_connection(inflate_step=step), wire)
    assert events == expected


def test_close_payload_round_trip():
    assert parse_close_payload(build_close_payload(4000, "réason")) == (4000, "réason")


def test_parser_bare_messages_mode():
    """The connection's parser returns whole messages as bare payloads (its hot path), a
    fragmented uncompressed message assembled into one when its final frame arrives, and Frame
    objects for everything else; `all_bare` says which kind the last feed returned."""
    from asgiws.codec import FrameParser

    parser = FrameParser(bare_messages=True)
    frames = parser.feed_data(client_frame(1, "a") + client_frame(2, b"b"))
    assert frames == ["a", b"b"] and parser.all_bare
    frames = parser.feed_data(client_frame(1, "c", fin=False) + client_frame(9, b"p"))
    assert [f.opcode for f in frames] == [9] and not parser.all_bare
    assert parser.assembled == 1  # "c", held in the message buffer: no object of its own
    frames = parser.feed_data(client_frame(0, "d"))
    assert frames == ["cd"] and parser.all_bare and parser.assembled == 0
    assert parser.bytes_parsed == sum(len(client_frame(*args)) for args in
                                      [(1, "a"), (2, b"b"), (1, "c"), (9, b"p"), (0, "d")])
