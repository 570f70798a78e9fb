"""Frame streams for the codec tests and the fuzz target (tests/fuzz/fuzz_parser.py): hypothesis
strategies for valid streams, the frames a parser must return for them, and helpers that feed a
stream to a parser in pieces."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from hypothesis import strategies as st

from asgiws import _reference
from asgiws._reference import Opcode

PROTOCOL_ERROR = 1002
INVALID_PAYLOAD = 1007
MESSAGE_TOO_BIG = 1009


@dataclasses.dataclass(frozen=True)
class FrameSpec:
    """One frame to put on the wire, and what the parser must return for it."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv1: bool = False
    delivered_as_str: bool = False  # a complete uncompressed text frame comes back as str

    def expected(self) -> tuple:
        payload = self.payload.decode("utf-8") if self.delivered_as_str else self.payload
        return (self.fin, self.rsv1, self.opcode, payload)


def frame_tuple(frame) -> tuple:
    """A parsed frame (codec or reference) as a comparable tuple; the payload type matters."""
    assert type(frame.payload) in (bytes, str), type(frame.payload)
    return (bool(frame.fin), bool(frame.rsv1), int(frame.opcode), frame.payload)


def bare_item(item) -> tuple:
    """An item of a `bare_messages=True` parser's result: a whole message's payload alone, or a
    Frame for everything else."""
    if isinstance(item, (bytes, str)):
        return ("message", item)
    return frame_tuple(item)


class BareAssembler:
    """What a `bare_messages=True` parser returns, from the reference's frame tuples, feed after
    feed: a whole uncompressed message is its payload alone (a fragmented one joined, text
    decoded) once its final frame arrives, and its fragments return nothing of their own;
    control frames and a compressed message's frames are returned as frames."""

    def __init__(self) -> None:
        self.opcode = 0
        self.parts: Optional[list] = None  # payloads of the uncompressed message being assembled

    def items(self, frames: list) -> list:
        out = []
        for frame in frames:
            fin, rsv1, opcode, payload = frame
            if opcode in (0x1, 0x2) and not rsv1:
                if fin:
                    out.append(("message", payload))
                else:
                    self.opcode, self.parts = opcode, [payload]
            elif opcode == 0x0 and self.parts is not None:
                self.parts.append(payload)
                if fin:
                    joined = b"".join(self.parts)
                    out.append(("message", joined.decode("utf-8") if self.opcode == 0x1 else joined))
                    self.parts = None
            else:
                out.append(frame)
        return out


def as_bare(frames: list) -> list:
    """BareAssembler's items for one whole stream."""
    return BareAssembler().items(frames)


def split_points(cuts: Sequence[int], length: int) -> list[int]:
    return sorted({0, length, *(cut % (length + 1) for cut in cuts)})


# ---------------------------------------------------------------------------------------------
# Strategies

SMALL = 300
BIG_SIZES = (65_535, 65_536, 70_000)


def payload_sizes(allow_big: bool):
    small = st.integers(0, SMALL)
    if not allow_big:
        return small
    return st.one_of(small, small, small, small, st.sampled_from(BIG_SIZES))


@st.composite
def text_payloads(draw, size: int) -> bytes:
    """Valid UTF-8 of about `size` bytes, with multibyte characters that fragments cut through."""
    text = draw(st.text(alphabet=st.sampled_from("aé€😀\x00~ "), max_size=max(1, size // 2)))
    encoded = text.encode("utf-8")
    if len(encoded) < size:
        encoded += b"x" * (size - len(encoded))
    # Trim back to a character boundary.
    while True:
        try:
            encoded[:size].decode("utf-8")
            return encoded[:size]
        except UnicodeDecodeError:
            size -= 1


@st.composite
def control_frames(draw, allow_close: bool = False) -> FrameSpec:
    opcodes = [Opcode.PING, Opcode.PONG] + ([Opcode.CLOSE] if allow_close else [])
    opcode = draw(st.sampled_from(opcodes))
    if opcode == Opcode.CLOSE:
        code = draw(st.sampled_from([1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999]))
        reason = draw(st.text(max_size=20))
        payload = draw(st.one_of(
            st.just(b""),
            st.just(_reference.build_close_payload(code, reason)),
        ))
    else:
        payload = draw(st.binary(max_size=125))
    return FrameSpec(opcode, payload)


@st.composite
def messages(draw, rsv1_allowed: bool, allow_big: bool) -> list[FrameSpec]:
    """One data message, maybe fragmented at random byte points (through multibyte characters),
    with control frames between its fragments."""
    opcode = draw(st.sampled_from([Opcode.TEXT, Opcode.BINARY]))
    compressed = rsv1_allowed and draw(st.booleans())
    size = draw(payload_sizes(allow_big))
    if opcode == Opcode.TEXT and not compressed:
        payload = draw(text_payloads(size))
    else:
        payload = draw(st.binary(min_size=size, max_size=size)) if size <= SMALL else bytes(
            (i * 7 + size) & 0xFF for i in range(size)
        )
    cuts = draw(st.lists(st.integers(0, len(payload)), max_size=4))
    bounds = split_points(cuts, len(payload))
    if draw(st.integers(0, 5)) == 0:  # empty fragments are legal
        index = draw(st.integers(0, len(bounds) - 1))
        bounds.insert(index, bounds[index])
    specs = []
    fragments = list(zip(bounds, bounds[1:])) or [(0, 0)]
    for index, (start, end) in enumerate(fragments):
        first, last = index == 0, index == len(fragments) - 1
        specs.append(FrameSpec(
            opcode=opcode if first else Opcode.CONTINUATION,
            payload=payload[start:end],
            fin=last,
            rsv1=compressed and first,
            delivered_as_str=first and last and opcode == Opcode.TEXT and not compressed,
        ))
        if not last and draw(st.integers(0, 3)) == 0:
            specs.append(draw(control_frames()))
    return specs


@st.composite
def frame_specs(draw, rsv1_allowed: bool = False, allow_big: bool = False, max_items: int = 8):
    """A valid stream: messages and control frames, maybe ending with a Close frame."""
    items = draw(st.lists(
        st.one_of(messages(rsv1_allowed, allow_big), control_frames().map(lambda f: [f])),
        max_size=max_items,
    ))
    specs = [spec for item in items for spec in item]
    if draw(st.integers(0, 4)) == 0:
        specs.append(draw(control_frames(allow_close=True)))
    return specs


def build_stream(specs: Sequence[FrameSpec], masks: Optional[Sequence[bytes]]) -> bytes:
    """The wire bytes, by the reference builder; masks[i] masks frame i (client frames)."""
    return b"".join(
        _reference.build_frame(
            spec.opcode, spec.payload, fin=spec.fin, rsv1=spec.rsv1,
            mask=None if masks is None else masks[index],
        )
        for index, spec in enumerate(specs)
    )


# ---------------------------------------------------------------------------------------------
# Feeding


@dataclasses.dataclass
class Outcome:
    frames: list
    error_code: Optional[int]
    buffered: Optional[int]  # None once the parser has stopped: unspecified then

    def __iter__(self):
        return iter((self.frames, self.error_code, self.buffered))


def outcome(parser, frames, stopped: bool = False) -> Outcome:
    """What a feed returned. A parser stops at an error or a Close frame (`stopped` says whether
    an earlier feed returned one); what it then does with later bytes is its own business, as
    long as it does not keep them (test_bytes_after_a_close_or_an_error_are_dropped)."""
    error = parser.error
    stopped = stopped or error is not None or any(frame.opcode == 0x8 for frame in frames)
    return Outcome([frame_tuple(f) for f in frames], None if error is None else error.code,
                   None if stopped else parser.buffered)


def feed_in_pieces(parser, data: bytes, bounds: Sequence[int]) -> Outcome:
    frames = []
    for start, end in zip(bounds, bounds[1:]):
        frames += parser.feed_data(data[start:end])
    return outcome(parser, frames)


def feed_through_get_buffer(parser, data: bytes, reads: Sequence[int],
                            sizehints: Sequence[int] = (-1,)) -> Outcome:
    """As an asyncio.BufferedProtocol does: get_buffer(), write at most what it offers, feed(n).
    `reads` are the sizes the "socket" delivers per call (cycled)."""
    frames = []
    position = 0
    call = 0
    while position < len(data):
        buffer = parser.get_buffer(sizehints[call % len(sizehints)])
        assert len(buffer) > 0, "get_buffer returned an empty buffer"
        assert not buffer.readonly
        n = min(len(buffer), max(1, reads[call % len(reads)]), len(data) - position)
        buffer[:n] = data[position : position + n]
        del buffer
        frames += parser.feed(n)
        position += n
        call += 1
    return outcome(parser, frames)

