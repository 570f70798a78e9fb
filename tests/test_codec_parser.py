"""asgiws._codec.FrameParser and the frame/close builders against asgiws._reference.

Generated streams are parsed by the codec (whole, in random pieces, through get_buffer/feed) and
by the reference parser, and must give the same frames; every protocol violation has its own test
asserting the exact close code from both parsers. Every test of the codec runs twice: against
the C extension (`cython`, skipped when it is not built) and against the pure-Python runtime
fallback, `asgiws._codec_py` (`python`)."""

import os
import random
import struct
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgiws import _codec_py, _reference
from asgiws._reference import Opcode

try:
    from asgiws import _codec
except ImportError:  # not built: the pure-Python codec is still compared with the reference
    _codec = None

from codec_streams import (
    INVALID_PAYLOAD,
    MESSAGE_TOO_BIG,
    PROTOCOL_ERROR,
    FrameSpec,
    BareAssembler,
    as_bare,
    bare_item,
    build_stream,
    feed_in_pieces,
    feed_through_get_buffer,
    frame_specs,
    frame_tuple,
    outcome,
    split_points,
)

KEY = b"\x37\xfa\x21\x3d"
UNBUILT = pytest.mark.skipif(_codec is None, reason="asgiws._codec is not built")
# The codecs under test: the extension and the pure-Python fallback.
CODECS = [pytest.param(_codec, id="cython", marks=UNBUILT), pytest.param(_codec_py, id="python")]
IMPLEMENTATIONS = [
    pytest.param(_codec and _codec.FrameParser, id="cython", marks=UNBUILT),
    pytest.param(_codec_py.FrameParser, id="python"),
    pytest.param(_reference.ReferenceParser, id="reference"),
]

masks = st.binary(min_size=4, max_size=4)


@pytest.fixture(params=IMPLEMENTATIONS)
def make_parser(request):
    return request.param


# ---------------------------------------------------------------------------------------------
# Generated valid streams


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(data=st.data(), is_server=st.booleans(), rsv1_allowed=st.booleans())
def test_random_streams_parse_the_same_however_split(codec, data, is_server, rsv1_allowed):
    specs = data.draw(frame_specs(rsv1_allowed=rsv1_allowed, allow_big=True), label="specs")
    keys = [data.draw(masks) for _ in specs] if is_server else None
    stream = build_stream(specs, keys)
    expected = [spec.expected() for spec in specs]
    options = dict(is_server=is_server, rsv1_allowed=rsv1_allowed)
    whole = [0, len(stream)]
    cuts = split_points(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)), len(stream))
    reads = data.draw(st.lists(st.integers(1, 70_000), min_size=1, max_size=10), label="reads")
    hints = data.draw(st.lists(st.integers(-1, 100_000), min_size=1, max_size=4), label="hints")

    codec_whole = codec.FrameParser(**options)
    for name, result in [
        ("reference whole", feed_in_pieces(_reference.ReferenceParser(**options), stream, whole)),
        ("reference split", feed_in_pieces(_reference.ReferenceParser(**options), stream, cuts)),
        ("codec whole", feed_in_pieces(codec_whole, stream, whole)),
        ("codec split", feed_in_pieces(codec.FrameParser(**options), stream, cuts)),
        ("codec get_buffer", feed_through_get_buffer(
            codec.FrameParser(**options), stream, reads, hints)),
    ]:
        assert result.error_code is None, name
        assert result.frames == expected, name
        assert result.buffered == (None if specs and specs[-1].opcode == Opcode.CLOSE else 0), name
    assert codec_whole.bytes_parsed == len(stream)

    bare = codec.FrameParser(**options, bare_messages=True)
    items = []
    for start, end in zip(cuts, cuts[1:]):
        returned = [bare_item(item) for item in bare.feed_data(stream[start:end])]
        if returned:
            assert bare.all_bare == all(item[0] == "message" for item in returned)
        items += returned
    assert items == as_bare(expected)
    assert bare.error is None and bare.bytes_parsed == len(stream)


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), is_server=st.booleans(), rsv1_allowed=st.booleans())
def test_truncated_streams_keep_the_partial_frame_buffered(codec, data, is_server, rsv1_allowed):
    specs = data.draw(frame_specs(rsv1_allowed=rsv1_allowed), label="specs")
    keys = [data.draw(masks) for _ in specs] if is_server else None
    stream = build_stream(specs, keys)
    end = data.draw(st.integers(0, len(stream)), label="end")
    cuts = split_points(data.draw(st.lists(st.integers(0, end), max_size=10)), end)
    options = dict(is_server=is_server, rsv1_allowed=rsv1_allowed)
    reference = feed_in_pieces(_reference.ReferenceParser(**options), stream[:end], [0, end])
    assert reference.error_code is None
    assert reference.frames == [spec.expected() for spec in specs][: len(reference.frames)]
    assert feed_in_pieces(codec.FrameParser(**options), stream[:end], cuts) == reference
    parser = codec.FrameParser(**options)
    assert feed_through_get_buffer(parser, stream[:end], [7, 100]) == reference


@st.composite
def mutated_streams(draw):
    """Valid streams with bits flipped, bytes dropped or inserted: mostly violations."""
    is_server = draw(st.booleans())
    rsv1_allowed = draw(st.booleans())
    specs = draw(frame_specs(rsv1_allowed=rsv1_allowed, max_items=5))
    stream = bytearray(build_stream(specs, [draw(masks) for _ in specs] if is_server else None))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "drop", "insert"]))
        position = draw(st.integers(0, max(0, len(stream) - 1)))
        if kind == "flip" and stream:
            stream[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and stream:
            stream[position] = draw(st.integers(0, 255))
        elif kind == "drop" and stream:
            del stream[position]
        elif kind == "insert":
            stream[position:position] = draw(st.binary(min_size=1, max_size=3))
    return is_server, rsv1_allowed, bytes(stream)


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=st.one_of(
        mutated_streams(),
        st.tuples(st.booleans(), st.booleans(), st.binary(max_size=300)),
    ),
    max_size=st.sampled_from([16 * 1024 * 1024, 200, 60, 0]),
    frame_overhead=st.sampled_from([0, 0, 7, 64]),
    cuts=st.lists(st.integers(0, 2000), max_size=10),
)
def test_mutated_streams_same_outcome_as_reference(codec, case, max_size, frame_overhead, cuts):
    is_server, rsv1_allowed, stream = case
    options = dict(is_server=is_server, rsv1_allowed=rsv1_allowed, max_size=max_size,
                   frame_overhead=frame_overhead)
    bounds = split_points(cuts, len(stream))
    reference = _reference.ReferenceParser(**options)
    parser = codec.FrameParser(**options)
    bare = codec.FrameParser(**options, bare_messages=True)
    assembler = BareAssembler()
    stopped = False
    for start, end in zip(bounds, bounds[1:]):
        chunk = stream[start:end]
        expected = outcome(reference, reference.feed_data(chunk), stopped)
        assert outcome(parser, parser.feed_data(chunk), stopped) == expected
        assert parser.bytes_parsed == reference.bytes_parsed
        assert [bare_item(item) for item in bare.feed_data(chunk)] == assembler.items(expected.frames)
        assert (bare.error and bare.error.code) == expected.error_code
        stopped = expected.buffered is None
    whole = codec.FrameParser(**options)
    assert feed_in_pieces(whole, stream, [0, len(stream)]).error_code == (
        None if reference.error is None else reference.error.code)


# ---------------------------------------------------------------------------------------------
# One test per protocol violation


def frame(opcode, payload=b"", *, fin=True, rsv1=False, rsv2=False, rsv3=False, mask=KEY,
          declared=None, length_bytes=None):
    """Any frame, valid or not: `declared` overrides the length field, `length_bytes` (0, 2, 8)
    forces a length encoding."""
    length = len(payload) if declared is None else declared
    if length_bytes is None:
        length_bytes = 0 if length <= 125 else 2 if length <= 0xFFFF else 8
    first = (fin << 7) | (rsv1 << 6) | (rsv2 << 5) | (rsv3 << 4) | opcode
    mask_bit = 0x80 if mask is not None else 0
    if length_bytes == 0:
        header = bytes([first, mask_bit | length])
    elif length_bytes == 2:
        header = bytes([first, mask_bit | 126]) + struct.pack("!H", length)
    else:
        header = bytes([first, mask_bit | 127]) + struct.pack("!Q", length)
    if mask is None:
        return header + payload
    return header + mask + _reference.mask(payload, mask)


def good(opcode, payload, *, fin=True, rsv1=False, as_str=None) -> FrameSpec:
    if as_str is None:
        as_str = opcode == Opcode.TEXT and fin and not rsv1
    return FrameSpec(opcode, payload, fin=fin, rsv1=rsv1, delivered_as_str=as_str)


PREFIX = [good(Opcode.PING, b"hi"), good(Opcode.BINARY, b"\x00\x01"),
          good(Opcode.TEXT, "é".encode())]


def check_violation(make_parser, before, bad, code, *, split=False, **options):
    """`before` (FrameSpecs) parse, then `bad` fails with `code`; nothing after it is parsed."""
    is_server = options.get("is_server", True)
    specs = PREFIX + before
    stream = build_stream(specs, [KEY] * len(specs) if is_server else None)
    trailer = frame(Opcode.BINARY, b"after", mask=KEY if is_server else None)
    data = stream + bad + trailer
    parser = make_parser(**options)
    if split:
        frames = []
        for index in range(len(data)):
            frames += parser.feed_data(data[index : index + 1])
    else:
        frames = parser.feed_data(data)
    assert [frame_tuple(f) for f in frames] == [spec.expected() for spec in specs]
    assert parser.error is not None, "no error reported"
    assert parser.error.code == code, parser.error
    if make_parser is not _reference.ReferenceParser:
        assert isinstance(parser.error, sys.modules[make_parser.__module__].ProtocolError)
    assert isinstance(parser.error.reason, str)
    assert parser.feed_data(trailer) == []
    assert parser.error.code == code


VIOLATIONS = {
    # Fragmentation (§5.4)
    "continuation without a message": ([], frame(0, b"x"), PROTOCOL_ERROR, {}),
    "continuation after a finished message": (
        [good(1, b"done")], frame(0, b"x"), PROTOCOL_ERROR, {}),
    "text frame while a text message is open": (
        [good(1, b"a", fin=False)], frame(1, b"b"), PROTOCOL_ERROR, {}),
    "binary frame while a binary message is open": (
        [good(2, b"a", fin=False)], frame(2, b"b"), PROTOCOL_ERROR, {}),
    "text frame while a binary message is open": (
        [good(2, b"a", fin=False), good(0, b"b", fin=False)], frame(1, b"c"), PROTOCOL_ERROR, {}),
    "new compressed message while one is open": (
        [good(1, b"a", fin=False, rsv1=True)], frame(1, b"b", rsv1=True), PROTOCOL_ERROR,
        {"rsv1_allowed": True}),
    # RSV bits (§5.2, RFC 7692 §6)
    "RSV1 without an extension (text)": ([], frame(1, b"a", rsv1=True), PROTOCOL_ERROR, {}),
    "RSV1 without an extension (binary)": ([], frame(2, b"a", rsv1=True), PROTOCOL_ERROR, {}),
    "RSV2": ([], frame(2, b"a", rsv2=True), PROTOCOL_ERROR, {}),
    "RSV3": ([], frame(2, b"a", rsv3=True), PROTOCOL_ERROR, {}),
    "RSV2 with permessage-deflate": (
        [], frame(1, b"a", rsv1=True, rsv2=True), PROTOCOL_ERROR, {"rsv1_allowed": True}),
    "RSV3 with permessage-deflate": (
        [], frame(2, b"a", rsv3=True), PROTOCOL_ERROR, {"rsv1_allowed": True}),
    "RSV1 on a continuation of a compressed message": (
        [good(1, b"a", fin=False, rsv1=True)], frame(0, b"b", rsv1=True), PROTOCOL_ERROR,
        {"rsv1_allowed": True}),
    "RSV1 on a continuation of an uncompressed message": (
        [good(2, b"a", fin=False)], frame(0, b"b", rsv1=True), PROTOCOL_ERROR,
        {"rsv1_allowed": True}),
    "RSV1 on a ping": ([], frame(9, b"p", rsv1=True), PROTOCOL_ERROR, {"rsv1_allowed": True}),
    "RSV1 on a close": (
        [], frame(8, b"\x03\xe8", rsv1=True), PROTOCOL_ERROR, {"rsv1_allowed": True}),
    # Control frames (§5.5)
    "ping over 125 bytes": ([], frame(9, b"p" * 126), PROTOCOL_ERROR, {}),
    "pong over 125 bytes": ([], frame(10, b"p" * 126), PROTOCOL_ERROR, {}),
    "close over 125 bytes": ([], frame(8, b"\x03\xe8" + b"r" * 124), PROTOCOL_ERROR, {}),
    "ping with a 64-bit length": (
        [], frame(9, b"p" * 200, length_bytes=8), PROTOCOL_ERROR, {}),
    "ping of 125 bytes in a 16-bit length": (
        [], frame(9, b"p" * 125, length_bytes=2), PROTOCOL_ERROR, {}),
    "fragmented ping": ([], frame(9, b"p", fin=False), PROTOCOL_ERROR, {}),
    "fragmented pong": ([], frame(10, b"p", fin=False), PROTOCOL_ERROR, {}),
    "fragmented close": ([], frame(8, b"\x03\xe8", fin=False), PROTOCOL_ERROR, {}),
    # Masking (§5.1, §5.3)
    "unmasked frame to a server": ([], frame(2, b"x", mask=None), PROTOCOL_ERROR, {}),
    "unmasked ping to a server": ([], frame(9, b"", mask=None), PROTOCOL_ERROR, {}),
    "masked frame to a client": (
        [], frame(2, b"x", mask=KEY), PROTOCOL_ERROR, {"is_server": False}),
    "masked close to a client": (
        [], frame(8, b"", mask=KEY), PROTOCOL_ERROR, {"is_server": False}),
    # Payload length (§5.2)
    "64-bit length with the most significant bit set": (
        [], frame(2, declared=1 << 63), PROTOCOL_ERROR, {}),
    "64-bit length all ones": ([], frame(2, declared=(1 << 64) - 1), PROTOCOL_ERROR, {}),
    "64-bit length MSB set, huge max_size": (
        [], frame(2, declared=(1 << 63) + 5), PROTOCOL_ERROR, {"max_size": (1 << 62)}),
    # Size limits
    "frame over max_size": ([], frame(2, b"x" * 101), MESSAGE_TOO_BIG, {"max_size": 100}),
    "text frame over max_size": ([], frame(1, b"x" * 101), MESSAGE_TOO_BIG, {"max_size": 100}),
    "first fragment over max_size": (
        [], frame(1, b"x" * 101, fin=False), MESSAGE_TOO_BIG, {"max_size": 100}),
    "message over max_size": (
        [good(2, b"x" * 60, fin=False)], frame(0, b"y" * 41), MESSAGE_TOO_BIG, {"max_size": 100}),
    "message over max_size across pings": (
        [good(1, b"x" * 50, fin=False), good(9, b"p" * 30), good(0, b"y" * 40, fin=False),
         good(10, b"q" * 30)],
        frame(0, b"z" * 11, fin=False), MESSAGE_TOO_BIG, {"max_size": 100}),
    "compressed message over max_size": (
        [good(1, b"x" * 60, fin=False, rsv1=True)], frame(0, b"y" * 41), MESSAGE_TOO_BIG,
        {"max_size": 100, "rsv1_allowed": True}),
    "frame declaring 2**32 + 1 bytes, default max_size": (
        [], frame(2, declared=(1 << 32) + 1), MESSAGE_TOO_BIG, {}),
    "frame declaring 16 MiB + 1, default max_size": (
        [], frame(2, declared=16 * 1024 * 1024 + 1), MESSAGE_TOO_BIG, {}),
    "ping over a small max_size": ([], frame(9, b"p" * 100), MESSAGE_TOO_BIG, {"max_size": 50}),
    # A protocol error in a header beats "too big" in the same header.
    "unmasked and too big": (
        [], frame(2, declared=1 << 40, mask=None), PROTOCOL_ERROR, {}),
    "reserved opcode and too big": ([], frame(3, declared=1 << 40), PROTOCOL_ERROR, {}),
    # Close payloads (§5.5.1, §7.4)
    "close payload of 1 byte": ([], frame(8, b"\x03"), PROTOCOL_ERROR, {}),
    "close reason not UTF-8": ([], frame(8, b"\x03\xe8\xff"), INVALID_PAYLOAD, {}),
    "close reason cut off": ([], frame(8, b"\x03\xe8ok \xe2\x82"), INVALID_PAYLOAD, {}),
    "close reason with a surrogate": (
        [], frame(8, b"\x03\xe8\xed\xa0\x80"), INVALID_PAYLOAD, {}),
    # UTF-8 of uncompressed text (§5.6, §8.1)
    "text frame not UTF-8": ([], frame(1, b"\xff"), INVALID_PAYLOAD, {}),
    "text frame with a surrogate": ([], frame(1, b"a\xed\xa0\x80"), INVALID_PAYLOAD, {}),
    "text frame with an overlong": ([], frame(1, b"\xc0\xaf"), INVALID_PAYLOAD, {}),
    "text frame cut off mid-character": ([], frame(1, b"ok\xe2\x82"), INVALID_PAYLOAD, {}),
    "text frame to a client not UTF-8": (
        [], frame(1, b"\xf5\x80\x80\x80", mask=None), INVALID_PAYLOAD, {"is_server": False}),
    "first fragment not UTF-8": ([], frame(1, b"\xff", fin=False), INVALID_PAYLOAD, {}),
    "later fragment not UTF-8": (
        [good(1, "ok é".encode(), fin=False), good(0, b"fine", fin=False)],
        frame(0, b"\xc0\xaf more", fin=False), INVALID_PAYLOAD, {}),
    "bad continuation byte across fragments": (
        [good(1, b"ok \xe2", fin=False)], frame(0, b"\x28\xa1", fin=False), INVALID_PAYLOAD, {}),
    "message cut off mid-character in the final fragment": (
        [good(1, b"a", fin=False)], frame(0, b"\xe2\x82"), INVALID_PAYLOAD, {}),
    "message cut off by an empty final fragment": (
        [good(1, b"ok\xe2", fin=False), good(0, b"\x82", fin=False)], frame(0, b""),
        INVALID_PAYLOAD, {}),
}
for _opcode in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]:
    VIOLATIONS[f"reserved opcode {_opcode:#x}"] = ([], frame(_opcode, b"x"), PROTOCOL_ERROR, {})
for _code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]:
    VIOLATIONS[f"close code {_code}"] = (
        [], frame(8, struct.pack("!H", _code) + b"r"), PROTOCOL_ERROR, {})


@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("name", list(VIOLATIONS))
def test_violation(make_parser, name, split):
    before, bad, code, options = VIOLATIONS[name]
    check_violation(make_parser, before, bad, code, split=split, **options)


# ---------------------------------------------------------------------------------------------
# Invalid UTF-8 fails fast: before the rest of the frame arrives (RFC 6455 §8.1, Autobahn 6.4)


def partial(data: bytes, missing: int) -> bytes:
    return data[: len(data) - missing]


@pytest.mark.parametrize("is_server", [True, False])
def test_invalid_utf8_fails_before_the_rest_of_the_text_frame(make_parser, is_server):
    key = KEY if is_server else None
    parser = make_parser(is_server=is_server)
    assert parser.feed_data(partial(frame(1, b"ok \xff" + b"x" * 100, mask=key), 100)) == []
    assert parser.error is not None and parser.error.code == INVALID_PAYLOAD


def test_invalid_utf8_fails_before_the_rest_of_a_continuation(make_parser):
    parser = make_parser()
    frames = parser.feed_data(frame(1, b"caf\xe2", fin=False))
    assert [frame_tuple(f) for f in frames] == [(False, False, 1, b"caf\xe2")]
    # \x28 cannot continue \xe2: the message is invalid from the first byte of the next frame.
    assert parser.feed_data(partial(frame(0, b"\x28" + b"y" * 50), 50)) == []
    assert parser.error is not None and parser.error.code == INVALID_PAYLOAD


@pytest.mark.parametrize("opcode, rsv1", [(2, False), (1, True)], ids=["binary", "compressed"])
def test_no_utf8_check_on_partial_binary_or_compressed_frames(make_parser, opcode, rsv1):
    parser = make_parser(rsv1_allowed=True)
    data = frame(opcode, b"\xff\xfe" + b"z" * 50, rsv1=rsv1)
    assert parser.feed_data(partial(data, 50)) == []
    assert parser.error is None
    frames = parser.feed_data(data[-50:])
    assert [frame_tuple(f) for f in frames] == [(True, rsv1, opcode, b"\xff\xfe" + b"z" * 50)]


@pytest.mark.parametrize("piece", [1, 3, 7, 64])
def test_valid_text_arriving_in_pieces(make_parser, piece):
    """Validating (and unmasking) the received part of a text frame read after read must not
    change what the whole frame decodes to, whatever the read boundaries."""
    text = "aé€😀 " * 40
    fragmented = [good(1, "é€".encode()[:3], fin=False), good(0, "é€".encode()[3:] + b" ok")]
    data = frame(1, text.encode()) + build_stream(fragmented, [KEY, KEY]) + frame(1, b"")
    parser = make_parser()
    frames = []
    for start in range(0, len(data), piece):
        frames += parser.feed_data(data[start : start + piece])
    assert parser.error is None
    assert [frame_tuple(f) for f in frames] == [(True, False, 1, text)] + [
        spec.expected() for spec in fragmented] + [(True, False, 1, "")]


# ---------------------------------------------------------------------------------------------
# Valid edge cases


def parse_all(make_parser, specs, **options):
    is_server = options.get("is_server", True)
    parser = make_parser(**options)
    frames = parser.feed_data(build_stream(specs, [KEY] * len(specs) if is_server else None))
    assert parser.error is None, parser.error
    assert [frame_tuple(f) for f in frames] == [spec.expected() for spec in specs]
    assert parser.buffered == 0
    return parser


def test_frame_and_message_of_exactly_max_size(make_parser):
    parse_all(make_parser, [good(2, b"x" * 100)], max_size=100)
    parse_all(make_parser, [good(1, b"x" * 100)], max_size=100)
    parse_all(make_parser, [good(1, b"x" * 40, fin=False), good(9, b"p" * 90),
                            good(0, b"y" * 60)], max_size=100)
    # The limit is per message: the next message starts from zero.
    parse_all(make_parser, [good(2, b"x" * 70, fin=False), good(0, b"y" * 30),
                            good(2, b"x" * 70, fin=False), good(0, b"y" * 30)], max_size=100)


def test_control_frames_between_fragments(make_parser):
    parse_all(make_parser, [good(1, b"caf", fin=False), good(9, b""), good(10, b"pong"),
                            good(0, b"\xc3", fin=False), good(9, b"x" * 125),
                            good(0, b"\xa9")])


def test_text_fragments_are_bytes_and_may_split_a_character(make_parser):
    emoji = "😀".encode()
    specs = [good(1, emoji[:1], fin=False)] + [good(0, emoji[i : i + 1], fin=False)
                                               for i in range(1, 3)] + [good(0, emoji[3:])]
    parse_all(make_parser, specs)
    parse_all(make_parser, [good(1, b"", fin=False), good(0, b""), good(1, b"")])


def test_compressed_messages_are_not_validated(make_parser):
    parse_all(make_parser, [good(1, b"\xff\xfe", rsv1=True)], rsv1_allowed=True)
    parse_all(make_parser, [good(1, b"\xff", fin=False, rsv1=True), good(0, b"\xc0")],
              rsv1_allowed=True)
    parse_all(make_parser, [good(2, b"\x00" * 10, rsv1=True)], rsv1_allowed=True)
    # An uncompressed message on the same connection is still validated.
    parser = make_parser(rsv1_allowed=True)
    parser.feed_data(frame(1, b"\xff\xfe"))
    assert parser.error.code == INVALID_PAYLOAD


def test_empty_frames(make_parser):
    parse_all(make_parser, [good(1, b""), good(2, b""), good(9, b""), good(10, b""),
                            good(8, b"")])


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                  1013, 1014, 3000, 3999, 4000, 4999])
def test_close_with_each_valid_code(make_parser, code):
    parse_all(make_parser, [good(8, struct.pack("!H", code) + "é bye".encode())])
    parse_all(make_parser, [good(8, struct.pack("!H", code))])


def test_nothing_after_a_close_is_parsed(make_parser):
    parser = make_parser()
    frames = parser.feed_data(frame(2, b"a") + frame(8, b"\x03\xe8") + frame(2, b"b"))
    assert [frame_tuple(f) for f in frames] == [
        (True, False, 2, b"a"), (True, False, 8, b"\x03\xe8")]
    assert parser.error is None
    assert parser.feed_data(frame(2, b"c")) == []
    assert parser.error is None


@pytest.mark.parametrize("length_bytes", [2, 8])
def test_non_minimal_length_encodings_are_accepted(make_parser, length_bytes):
    """RFC 6455 §5.2 asks senders for the minimal encoding; like websockets and most peers, a
    receiver takes the length at its word (decision recorded in _reference.py)."""
    parser = make_parser()
    frames = parser.feed_data(frame(2, b"abc", length_bytes=length_bytes) +
                              frame(1, b"x" * 200, length_bytes=8))
    assert parser.error is None
    assert [frame_tuple(f) for f in frames] == [
        (True, False, 2, b"abc"), (True, False, 1, "x" * 200)]


# ---------------------------------------------------------------------------------------------
# Size limits from the header alone, and the buffer


def test_too_big_from_the_header_before_any_payload(make_parser):
    parser = make_parser(max_size=1000)
    assert parser.feed_data(frame(2, declared=1 << 20)) == []  # 2 + 8 + 4 header bytes only
    assert parser.error is not None and parser.error.code == MESSAGE_TOO_BIG


def test_too_big_as_soon_as_the_extended_length_is_in(make_parser):
    header = frame(2, declared=2000)[:4]  # 16-bit length, masking key not yet received
    parser = make_parser(max_size=1000)
    assert parser.feed_data(header[:3]) == []
    assert parser.error is None
    assert parser.feed_data(header[3:]) == []
    assert parser.error is not None and parser.error.code == MESSAGE_TOO_BIG


def test_every_fragment_after_the_first_counts_frame_overhead(make_parser):
    """Empty continuation frames add up: with 64 bytes each, 15 fit under 1000, the 16th is 1009
    (and a single frame of exactly max_size is still fine)."""
    parser = make_parser(max_size=1000, frame_overhead=64)
    assert parser.feed_data(frame(2, b"", fin=False) + frame(0, b"", fin=False) * 15) is not None
    assert parser.error is None
    parser.feed_data(frame(0, b"", fin=False))
    assert parser.error is not None and parser.error.code == MESSAGE_TOO_BIG
    whole = make_parser(max_size=1000, frame_overhead=64)
    assert len(whole.feed_data(frame(2, b"x" * 1000))) == 1 and whole.error is None


@pytest.mark.parametrize("codec", CODECS)
def test_fragments_are_assembled_into_one_buffer_with_no_object_each(codec):
    parser = codec.FrameParser(bare_messages=True, frame_overhead=64)
    assert parser.feed_data(frame(1, "é".encode()[:1], fin=False)) == []
    for _ in range(999):
        assert parser.feed_data(frame(0, b"", fin=False)) == []
    assert parser.assembled == 1 and parser.all_bare
    assert parser.feed_data(frame(0, "é".encode()[1:])) == ["é"]
    assert parser.assembled == 0 and parser.error is None


@pytest.mark.parametrize("codec", CODECS)
def test_invalid_utf8_in_an_assembled_fragment_fails_on_that_fragment(codec):
    parser = codec.FrameParser(bare_messages=True)
    assert parser.feed_data(frame(1, b"ok", fin=False)) == []
    assert parser.feed_data(frame(0, b"\xff", fin=False)) == []
    assert parser.error.code == INVALID_PAYLOAD


@pytest.mark.parametrize("codec", CODECS)
def test_max_items_bounds_one_feed_and_feed_0_parses_on(codec):
    parser = codec.FrameParser(bare_messages=True, max_items=10)
    data = b"".join(frame(2, b"%d" % i) for i in range(25)) + frame(9, b"p")
    got = parser.feed_data(data)
    assert len(got) == 10 and parser.more
    while parser.more:
        got += parser.feed(0)
    assert got[:25] == [b"%d" % i for i in range(25)] and got[25].opcode == 9
    assert parser.buffered == 0


@pytest.mark.parametrize("codec", CODECS)
def test_too_big_with_the_default_max_size_does_not_allocate(codec):
    parser = codec.FrameParser()
    before = parser.capacity
    parser.feed_data(frame(2, declared=16 * 1024 * 1024 + 1))
    assert parser.error.code == MESSAGE_TOO_BIG
    assert parser.capacity == before


def test_length_above_2_to_the_32_with_huge_max_size_waits(make_parser):
    parser = make_parser(max_size=1 << 40)
    data = frame(2, declared=(1 << 33) + 7) + b"\x00" * 1000
    assert parser.feed_data(data) == []
    assert parser.error is None
    assert parser.buffered == len(data)
    if make_parser is not _reference.ReferenceParser:
        assert parser.capacity < 1 << 20  # the declared length was not allocated


@pytest.mark.parametrize("codec", CODECS)
def test_get_buffer_does_not_allocate_a_declared_length_that_has_not_arrived(codec):
    """With a huge max_size, a 14-byte header must not make the parser allocate 8 GiB: the buffer
    grows with the bytes that arrive, not with what a peer claims it will send."""
    parser = codec.FrameParser(max_size=1 << 40)
    parser.feed_data(frame(2, declared=(1 << 33) + 7))
    buffer = parser.get_buffer()
    assert len(buffer) > 0
    del buffer
    assert parser.error is None
    assert parser.capacity < 1 << 33


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("stop", ["close", "error"])
def test_bytes_after_a_close_or_an_error_are_dropped(codec, stop):
    """Once stopped, the parser keeps nothing: a peer that goes on sending after its Close frame
    or after a violation (while the close handshake runs) must not grow the buffer."""
    first = frame(8, b"\x03\xe8") if stop == "close" else frame(3, b"")
    reference = _reference.ReferenceParser()
    reference.feed_data(first)
    reference.feed_data(b"\x00" * 100_000)
    assert reference.buffered == 0
    parser = codec.FrameParser(initial_size=64 * 1024)
    parser.feed_data(first)
    for _ in range(200):  # 12.5 MiB, as a socket would deliver it
        buffer = parser.get_buffer()
        n = min(len(buffer), 65536)
        buffer[:n] = bytes(n)
        del buffer
        assert parser.feed(n) == []
    parser.feed_data(bytes(100_000))
    assert parser.capacity <= 1 << 20, f"buffer grew to {parser.capacity} after {stop}"


@pytest.mark.parametrize("codec", CODECS)
def test_default_initial_capacity_is_the_documented_16_kib(codec):
    assert codec.FrameParser().capacity == 16 * 1024


@pytest.mark.parametrize("codec", CODECS)
def test_capacity_stays_put_over_many_reads_and_shrinks_back_after_a_burst(codec):
    initial = 64 * 1024
    parser = codec.FrameParser(initial_size=initial)
    assert parser.capacity == initial
    small = b"".join(frame(2, os.urandom(32), mask=os.urandom(4)) for _ in range(10_000))
    # Reads that cut frames anywhere: the partial frame is compacted, the buffer never grows.
    result = feed_through_get_buffer(parser, small, [1000, 7, 4096, 333])
    assert len(result.frames) == 10_000 and result.error_code is None and result.buffered == 0
    assert parser.capacity == initial

    big_payload = os.urandom(1 << 20)
    burst = frame(2, big_payload, mask=KEY) + frame(2, b"tail", mask=KEY)
    result = feed_through_get_buffer(parser, burst, [16 * 1024])
    assert [f[3] for f in result.frames] == [big_payload, b"tail"]
    grown_to = parser.capacity
    result = feed_through_get_buffer(parser, small[: 38 * 100], [1000])
    assert len(result.frames) == 100
    assert parser.capacity == initial, f"still {parser.capacity} after a burst to {grown_to}"

    # The same through feed_data.
    parser.feed_data(burst)
    parser.feed_data(frame(2, b"x"))
    assert parser.capacity == initial


@pytest.mark.parametrize("codec", CODECS)
def test_get_buffer_is_never_empty_and_feed_checks_its_argument(codec):
    parser = codec.FrameParser(initial_size=8192)
    for hint in (-1, 0, 1, 10, 100_000):
        buffer = parser.get_buffer(hint)
        assert len(buffer) > 0
        assert not buffer.readonly
        del buffer
    free = len(parser.get_buffer())
    for bad in (-1, free + 1):
        with pytest.raises((ValueError, OverflowError)):
            parser.feed(bad)
    assert parser.buffered == 0
    assert parser.feed(0) == []


@pytest.mark.parametrize("codec", CODECS)
def test_large_frame_arrives_over_many_reads(codec):
    payload = os.urandom(300_000)
    data = frame(2, payload) + frame(1, "é".encode() * 1000)
    parser = codec.FrameParser()
    result = feed_through_get_buffer(parser, data, [1, 13, 1500, 65536])
    assert result.frames == [(True, False, 2, payload), (True, False, 1, "é" * 1000)]


# ---------------------------------------------------------------------------------------------
# Builders and round trips

ROUND_TRIP_LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 65537]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("length", ROUND_TRIP_LENGTHS)
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
@pytest.mark.parametrize("is_server", [True, False], ids=["client-to-server", "server-to-client"])
def test_build_parse_round_trip(codec, length, opcode, is_server):
    key = os.urandom(4) if is_server else None
    if opcode == Opcode.TEXT:
        text = ("é" * length)[: length // 2] + "a" * (length % 2)
        payload, expected = text, text
    else:
        payload = expected = os.urandom(length)
    built = codec.build_frame(opcode, payload, mask=key)
    assert type(built) is bytes
    assert built == _reference.build_frame(opcode, payload, mask=key)
    for parser in (codec.FrameParser(is_server=is_server),
                   _reference.ReferenceParser(is_server=is_server)):
        frames = parser.feed_data(built)
        assert parser.error is None
        assert [frame_tuple(f) for f in frames] == [(True, False, opcode, expected)]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("fin", [True, False])
@pytest.mark.parametrize("rsv1", [True, False])
def test_build_frame_flags_and_payload_types(codec, fin, rsv1):
    for payload in (b"abc", bytearray(b"abc"), memoryview(b"xabcx")[1:4], "abc"):
        for key in (None, KEY):
            built = codec.build_frame(Opcode.BINARY, payload, fin=fin, rsv1=rsv1, mask=key)
            assert built == _reference.build_frame(Opcode.BINARY, payload, fin=fin, rsv1=rsv1,
                                                   mask=key)


HEADER_LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 65537, 1 << 32, (1 << 63) - 1]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("length", HEADER_LENGTHS)
def test_build_header(codec, length):
    for opcode in (0, 1, 2, 8, 9, 10):
        for fin in (True, False):
            for rsv1 in (True, False):
                for key in (None, KEY):
                    header = codec.build_header(opcode, length, fin=fin, rsv1=rsv1, mask=key)
                    assert header == _reference.build_header(opcode, length, fin=fin, rsv1=rsv1,
                                                             mask=key)
                    size = 2 if length <= 125 else 4 if length <= 0xFFFF else 10
                    assert len(header) == size + (4 if key else 0)


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=100, deadline=None)
@given(st.integers(0, 70_000), st.sampled_from([0, 1, 2, 8, 9, 10]), st.booleans(),
       st.one_of(st.none(), masks))
def test_build_header_then_payload_is_build_frame(codec, length, opcode, fin, key):
    payload = bytes(length)
    header = codec.build_header(opcode, length, fin=fin, mask=key)
    body = payload if key is None else codec.mask(payload, key)
    assert header + body == codec.build_frame(opcode, payload, fin=fin, mask=key)


VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                     3000, 3999, 4000, 4999]
INVALID_CLOSE_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1999, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("code", VALID_CLOSE_CODES)
@pytest.mark.parametrize("reason", ["", "bye", "é" * 61])
def test_close_payload_round_trip(codec, code, reason):
    payload = codec.build_close_payload(code, reason)
    assert payload == _reference.build_close_payload(code, reason)
    assert payload == struct.pack("!H", code) + reason.encode()
    assert codec.parse_close_payload(payload) == (code, reason)
    assert _reference.parse_close_payload(payload) == (code, reason)


@pytest.mark.parametrize("codec", CODECS)
def test_close_payload_without_a_status(codec):
    assert codec.build_close_payload(1005) == b""
    assert codec.parse_close_payload(b"") == (1005, "")
    assert _reference.parse_close_payload(b"") == (1005, "")


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("code", INVALID_CLOSE_CODES)
def test_parse_close_payload_invalid_code(codec, code):
    payload = struct.pack("!H", code) + b"reason"
    for implementation in (codec, _reference):
        with pytest.raises(implementation.ProtocolError) as caught:
            implementation.parse_close_payload(payload)
        assert caught.value.code == PROTOCOL_ERROR


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("code", [c for c in INVALID_CLOSE_CODES if c != 1005])
def test_build_close_payload_refuses_codes_not_for_the_wire(codec, code):
    for implementation in (codec, _reference):
        with pytest.raises(ValueError):
            implementation.build_close_payload(code, "")


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "payload, code",
    [(b"\x03", PROTOCOL_ERROR), (b"\x03\xe8\xff", INVALID_PAYLOAD),
     (b"\x03\xe8\xe2\x82", INVALID_PAYLOAD), (b"\x03\xe8\xed\xa0\x80", INVALID_PAYLOAD)],
)
def test_parse_close_payload_violations(codec, payload, code):
    for implementation in (codec, _reference):
        with pytest.raises(implementation.ProtocolError) as caught:
            implementation.parse_close_payload(payload)
        assert caught.value.code == code


@pytest.mark.parametrize("codec", CODECS)
def test_is_valid_close_code_everywhere(codec):
    for code in range(0, 70_000):
        assert codec.is_valid_close_code(code) == _reference.is_valid_close_code(code), code
    assert [c for c in range(0, 70_000) if codec.is_valid_close_code(c)] == (
        [1000, 1001, 1002, 1003] + list(range(1007, 1015)) + list(range(3000, 5000)))


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.sampled_from([65535, 65536, 70000, 200_000]), min_size=1, max_size=3),
    reads=st.lists(st.integers(1, 90_000), min_size=1, max_size=30),
    through_get_buffer=st.booleans(),
    fragmented=st.booleans(),
    bare=st.booleans(),
)
def test_large_binary_frames_received_in_place(codec, sizes, reads, through_get_buffer, fragmented, bare):
    """Binary frames from 64 KiB go straight into their payload object, or for a fragment of an
    assembled message (bare_messages) into the message buffer (get_buffer hands out a view of
    it); however the stream is cut, the frames equal the reference's."""
    rng = random.Random(len(sizes) * 7 + sum(reads))
    stream = b""
    for size in sizes:
        payload = rng.randbytes(size)
        if fragmented:
            half = size // 2
            stream += _reference.build_frame(2, payload[:half], fin=False, mask=rng.randbytes(4))
            stream += _reference.build_frame(9, b"ping", mask=rng.randbytes(4))
            stream += _reference.build_frame(0, payload[half:], mask=rng.randbytes(4))
        else:
            stream += _reference.build_frame(2, payload, mask=rng.randbytes(4))
    stream += _reference.build_frame(1, "tail", mask=rng.randbytes(4))
    expected = _reference.ReferenceParser().feed_data(stream)
    parser = codec.FrameParser(bare_messages=bare)
    got, offset, i = [], 0, 0
    while offset < len(stream):
        n = reads[i % len(reads)]
        i += 1
        chunk = stream[offset:offset + n]
        if through_get_buffer:
            view = parser.get_buffer()
            chunk = chunk[:len(view)]
            view[:len(chunk)] = chunk
            del view
            got += parser.feed(len(chunk))
        else:
            got += parser.feed_data(chunk)
        offset += len(chunk)
    assert parser.error is None
    if bare:
        assert [bare_item(item) for item in got] == as_bare([frame_tuple(f) for f in expected])
    else:
        assert [(f.fin, f.opcode, f.payload) for f in got] == [(f.fin, f.opcode, f.payload) for f in expected]
    assert parser.buffered == 0
    assert parser.bytes_parsed == len(stream)


def test_an_empty_parser_reads_into_the_shared_buffer_and_keeps_only_what_is_left():
    """Idle connections own no receive buffer; a read of whole frames allocates nothing, a read
    that ends in a partial frame keeps only that, and a read that was never fed (a FIN: the read
    returned 0 bytes) leaves nothing behind that another parser's read could disturb."""
    a = _codec.FrameParser()
    b = _codec.FrameParser()
    whole = frame(2, b"hello", mask=KEY)
    partial = frame(2, b"world", mask=KEY)

    view = a.get_buffer(-1)
    view[: len(whole)] = whole
    del view
    assert [f.payload for f in a.feed(len(whole))] == [b"hello"]
    assert not a.owns_buffer and a.buffered == 0

    view = a.get_buffer(-1)  # handed out, never fed: the read saw EOF
    del view
    view = b.get_buffer(-1)  # the same shared memory, now written by b's read
    view[: len(whole) + 3] = whole + partial[:3]
    del view
    assert [f.payload for f in b.feed(len(whole) + 3)] == [b"hello"]
    assert b.owns_buffer and b.buffered == 3

    view = a.get_buffer(-1)  # a reads on: b's partial frame must not move
    view[: len(partial)] = partial
    del view
    assert [f.payload for f in a.feed(len(partial))] == [b"world"]
    assert [f.payload for f in b.feed_data(partial[3:])] == [b"world"]
    assert not a.owns_buffer and not b.owns_buffer


def test_frames_left_for_the_next_feed_move_out_of_the_shared_buffer():
    parser = _codec.FrameParser(max_items=2)
    data = b"".join(frame(2, bytes([i]) * 10, mask=KEY) for i in range(5))
    view = parser.get_buffer(-1)
    view[: len(data)] = data
    del view
    first = parser.feed(len(data))
    assert [f.payload for f in first] == [bytes([0]) * 10, bytes([1]) * 10] and parser.more
    assert parser.owns_buffer
    other = _codec.FrameParser()  # overwrites the shared buffer
    view = other.get_buffer(-1)
    view[:64] = bytes(64)
    del view
    rest = parser.feed(0) + parser.feed(0)
    assert [f.payload for f in rest] == [bytes([i]) * 10 for i in range(2, 5)]
