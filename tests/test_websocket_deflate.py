"""permessage-deflate (RFC 7692): negotiation and bounded inflation, without sockets."""

import os
import zlib
from collections import OrderedDict

import pytest

from asgiws.websocket import deflate
from asgiws.websocket.deflate import (
    DeflateSettings,
    MessageTooBig,
    PerMessageDeflate,
    negotiate,
)
from asgiws.websocket.handshake import parse_extensions

SETTINGS = DeflateSettings()


def offer(text):
    return parse_extensions([text.encode()])


@pytest.mark.parametrize(
    "header, response",
    [
        ("permessage-deflate", "permessage-deflate; server_max_window_bits=12"),
        ("permessage-deflate; client_max_window_bits",
         "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
        ("permessage-deflate; client_max_window_bits=10",
         "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10"),
        ("permessage-deflate; server_max_window_bits=9", "permessage-deflate; server_max_window_bits=9"),
        ("permessage-deflate; server_no_context_takeover; client_no_context_takeover",
         "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
         "server_max_window_bits=12"),
        # Declined offers fall through to the next one.
        ("permessage-deflate; server_max_window_bits=8, permessage-deflate",
         "permessage-deflate; server_max_window_bits=12"),
        ("permessage-deflate; foo=1, permessage-deflate; client_no_context_takeover",
         "permessage-deflate; client_no_context_takeover; server_max_window_bits=12"),
    ],
)
def test_negotiation(header, response):
    params, value = negotiate(offer(header), SETTINGS)
    assert value.decode() == response


@pytest.mark.parametrize(
    "header",
    [
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; unknown",
    ],
)
def test_declined(header):
    assert negotiate(offer(header), SETTINGS) is None


def client_compress(data, bits=15):
    c = zlib.compressobj(6, zlib.DEFLATED, -bits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def test_round_trip_with_context_takeover():
    params, _ = negotiate(offer("permessage-deflate"), SETTINGS)
    ext = PerMessageDeflate(params, SETTINGS)
    inflater = zlib.decompressobj(-15)
    for message in [b"hello" * 100, b"", os.urandom(5000), b"hello" * 100]:
        compressed = ext.compress(message)
        assert inflater.decompress(compressed + b"\x00\x00\xff\xff") == message
    assert ext.decompress(client_compress(b"abc" * 1000), True, 1 << 20) == b"abc" * 1000


def test_inflation_bounded_by_limit():
    params, _ = negotiate(offer("permessage-deflate"), SETTINGS)
    ext = PerMessageDeflate(params, SETTINGS)
    bomb = client_compress(b"\x00" * (10 << 20))
    assert len(bomb) < 20_000
    with pytest.raises(MessageTooBig):
        ext.decompress(bomb, True, 1 << 20)


def test_fragmented_inflation():
    params, _ = negotiate(offer("permessage-deflate"), SETTINGS)
    ext = PerMessageDeflate(params, SETTINGS)
    data = client_compress(b"fragmented message " * 50)
    half = len(data) // 2
    out = ext.decompress(data[:half], False, 1 << 20) + ext.decompress(data[half:], True, 1 << 20)
    assert out == b"fragmented message " * 50


# Messages that refer back to the ones before them: the second half of each is the first half of
# the next, and one is longer than a 12-bit window.
CHAIN = [b"price update %d " % i * 40 for i in range(5)] + [os.urandom(3000) * 2, b"", b"tail" * 9]


def test_context_kept_between_messages_both_ways():
    """With context takeover the connection keeps only the two windows, as bytes, between
    messages: a message compressed after them refers back, and one inflated after them may."""
    params, _ = negotiate(offer("permessage-deflate; client_max_window_bits"), SETTINGS)
    assert params.server_max_window_bits == params.client_max_window_bits == 12
    ext = PerMessageDeflate(params, SETTINGS)
    client_inflater = zlib.decompressobj(-12)
    client_compressor = zlib.compressobj(6, zlib.DEFLATED, -12, 8)
    for message in CHAIN:
        sent = ext.compress(message)
        assert client_inflater.decompress(sent + b"\x00\x00\xff\xff") == message
        received = client_compressor.compress(message) + client_compressor.flush(zlib.Z_SYNC_FLUSH)
        received = received[:-4]  # the empty block's tail, which the sender removes
        third = len(received) // 3  # in three frames
        frames = [received[:third], received[third:2 * third], received[2 * third:]]
        out = b"".join(ext.decompress(f, i == 2, 1 << 20) for i, f in enumerate(frames))
        assert out == message
        assert ext._decompressor is None  # no zlib object between messages
        assert len(ext._sent_window) <= 4096 and len(ext._received_window) <= 4096
    # A message sent again is a reference to the window: a few bytes.
    assert len(ext.compress(CHAIN[-1])) < 10


def test_no_context_takeover_keeps_nothing():
    params, _ = negotiate(offer("permessage-deflate; server_no_context_takeover; "
                                "client_no_context_takeover"), SETTINGS)
    ext = PerMessageDeflate(params, SETTINGS)
    for message in CHAIN:
        inflater = zlib.decompressobj(-12)
        assert inflater.decompress(ext.compress(message) + b"\x00\x00\xff\xff") == message
        assert ext.decompress(client_compress(message), True, 1 << 20) == message
    assert ext._sent_window == ext._received_window == b""


def test_kept_compressors_bounded_and_streams_intact(monkeypatch):
    """Only the KEPT_COMPRESSORS connections that sent last keep a compressor; one pushed out
    primes a new one from its window, and its client reads the stream as if nothing happened."""
    monkeypatch.setattr(deflate, "KEPT_COMPRESSORS", 2)
    monkeypatch.setattr(deflate, "_kept_compressors", OrderedDict())  # not other tests' ones
    params, _ = negotiate(offer("permessage-deflate; client_max_window_bits"), SETTINGS)
    conns = [PerMessageDeflate(params, SETTINGS) for _ in range(4)]
    inflaters = [zlib.decompressobj(-12) for _ in conns]
    for message in CHAIN:
        for ext, inflater in zip(conns, inflaters):
            sent = ext.compress(message)
            assert inflater.decompress(sent + b"\x00\x00\xff\xff") == message
            assert len(deflate._kept_compressors) <= 2
    assert list(deflate._kept_compressors) == conns[2:]
    for ext in conns:
        ext.release()
    assert not deflate._kept_compressors
