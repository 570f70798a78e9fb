"""permessage-deflate (RFC 7692): negotiation, compression and bounded decompression.

Between messages a connection keeps its context as plain bytes, not as live zlib streams: the
last 2**bits bytes it sent and received, which is all a message may refer back to (§7.1.1,
§7.1.2). Each message gets a fresh compressor or decompressor primed with that window as a
preset dictionary, dropped when the message is done. A kept zlib compressor (12 window bits,
memLevel 5) is 32 KiB resident and a decompressor 12 KiB; the two windows are 4 KiB each. The
compressed bytes are the same as a kept compressor's; priming costs about 6 µs per message sent
(a 4 KiB dictionary), nothing measurable per message received. So the connections that sent
most recently keep their compressor, up to KEPT_COMPRESSORS per process, and skip the priming.
Figures: bench/deflate.py and docs/websocket.md, "Compression defaults". Without context
takeover nothing is kept.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

EXTENSION_NAME = "permessage-deflate"
_EMPTY_BLOCK = b"\x00\x00\xff\xff"  # RFC 7692 §7.2.1: the tail every sync flush ends with

Offer = Tuple[str, List[Tuple[str, Optional[str]]]]


class MessageTooBig(Exception):
    """A compressed message inflates past the maximum message size."""


@dataclass(frozen=True, slots=True)
class DeflateSettings:
    """What this server is willing to use (from Config)."""

    # The reasons, with the figures: docs/websocket.md, "Compression defaults".
    server_max_window_bits: int = 12  # the context each side keeps: 4 KiB
    client_max_window_bits: int = 12
    mem_level: int = 5  # per message only (a compressor lives while it compresses)
    compress_level: int = zlib.Z_DEFAULT_COMPRESSION  # 6, as uvicorn and browsers
    compress_min_size: int = 64  # smaller messages go uncompressed (RSV1 clear, §6)


@dataclass(frozen=True, slots=True)
class DeflateParameters:
    """What was agreed with one client."""

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: int  # our compressor's window
    client_max_window_bits: int  # the window our decompressor must allow

    def response_header(self, client_offered_window: bool) -> bytes:
        params = [EXTENSION_NAME]
        if self.server_no_context_takeover:
            params.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            params.append("client_no_context_takeover")
        if self.server_max_window_bits < 15:
            params.append(f"server_max_window_bits={self.server_max_window_bits}")
        if client_offered_window and self.client_max_window_bits < 15:
            params.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(params).encode("ascii")


def negotiate(offers: List[Offer], settings: DeflateSettings) -> Optional[Tuple[DeflateParameters, bytes]]:
    """Accept the first permessage-deflate offer we can honour (RFC 7692 §5.1, §7.1).

    Returns the agreed parameters and the Sec-WebSocket-Extensions response value, or None to
    decline (no offer, or none valid and honourable). An offer asking our window to be 8 bits is
    declined: zlib's raw deflate cannot use a 256-byte window (it silently uses 512).
    """
    for name, params in offers:
        if name != EXTENSION_NAME:
            continue
        agreed = _accept_offer(params, settings)
        if agreed is not None:
            return agreed
    return None


def _window_bits(value: Optional[str]) -> Optional[int]:
    if value is None or not value.isdigit() or (len(value) > 1 and value[0] == "0"):
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def _accept_offer(params: Sequence[Tuple[str, Optional[str]]], settings: DeflateSettings) -> Optional[Tuple[DeflateParameters, bytes]]:
    seen = set()
    server_no_context_takeover = False
    client_no_context_takeover = False
    server_bits = settings.server_max_window_bits
    client_bits = 15  # without client_max_window_bits in the offer, the client may use 15
    client_offered_window = False
    for name, value in params:
        if name in seen:
            return None  # §7: a parameter twice makes the offer invalid
        seen.add(name)
        if name == "server_no_context_takeover":
            if value is not None:
                return None
            server_no_context_takeover = True
        elif name == "client_no_context_takeover":
            if value is not None:
                return None
            client_no_context_takeover = True
        elif name == "server_max_window_bits":
            bits = _window_bits(value)
            if bits is None:
                return None
            if bits == 8:
                return None
            server_bits = min(server_bits, bits)
        elif name == "client_max_window_bits":
            client_offered_window = True
            if value is None:
                client_bits = settings.client_max_window_bits
            else:
                bits = _window_bits(value)
                if bits is None:
                    return None
                client_bits = min(bits, settings.client_max_window_bits)
        else:
            return None  # an unknown parameter: decline this offer
    agreed = DeflateParameters(
        server_no_context_takeover=server_no_context_takeover,
        client_no_context_takeover=client_no_context_takeover,
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
    )
    return agreed, agreed.response_header(client_offered_window)


def _window_after(window: bytes, data: bytes, size: int) -> bytes:
    """The last `size` bytes of `window` followed by `data` (copy: at most `size` bytes)."""
    if len(data) >= size:
        return bytes(data[len(data) - size:])
    keep = size - len(data)
    return window[len(window) - keep:] + data if len(window) > keep else window + data


# The compressors of the connections that sent most recently, least recent first: a message
# they send needs no priming. Bound: KEPT_COMPRESSORS per process, 32 KiB resident each at 12
# bits and memLevel 5 (4 MiB); a connection pushed out still has its window, and primes a new
# compressor when it next sends. Touched only from the event loop's thread.
KEPT_COMPRESSORS = 128
_kept_compressors: "OrderedDict[PerMessageDeflate, zlib._Compress]" = OrderedDict()


class PerMessageDeflate:
    """Compresses outgoing and inflates incoming messages for one connection."""

    def __init__(self, params: DeflateParameters, settings: DeflateSettings):
        self.params = params
        self.settings = settings
        # zlib cannot inflate with a 256-byte window; a larger window inflates the same data.
        self._inflate_bits = max(9, params.client_max_window_bits)
        # What the next message may refer back to (b"" without context takeover). Bound:
        # 2**server_max_window_bits and 2**client_max_window_bits bytes (4 KiB each at 12 bits).
        self._sent_window = b""
        self._received_window = b""
        # The message being inflated: its decompressor, the frame's input not yet consumed, and
        # whether that frame ends the message. None between messages.
        self._decompressor: Optional["zlib._Decompress"] = None
        self._input = b""
        self._input_fin = False

    def compress(self, data: bytes) -> bytes:
        """A whole message's payload for a frame with RSV1 set (RFC 7692 §7.2.1)."""
        settings = self.settings
        bits = self.params.server_max_window_bits
        window = self._sent_window
        compressor = _kept_compressors.pop(self, None)
        if compressor is None:  # primed with the window (an empty one primes nothing)
            compressor = zlib.compressobj(settings.compress_level, zlib.DEFLATED, -bits,
                                          settings.mem_level, zdict=window)
        out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if not self.params.server_no_context_takeover:
            self._sent_window = _window_after(window, data, 1 << bits)
            _kept_compressors[self] = compressor  # the most recent, last
            if len(_kept_compressors) > KEPT_COMPRESSORS:
                _kept_compressors.popitem(last=False)
        if out.endswith(_EMPTY_BLOCK):
            out = out[:-4]
        return out or b"\x00"  # an empty message compresses to one empty block byte

    def release(self) -> None:
        """The connection is gone: give back its kept compressor, if it has one."""
        _kept_compressors.pop(self, None)

    def stop_inflating(self) -> None:
        """The connection failed: drop the message being inflated (its zlib stream)."""
        self._decompressor = None
        self._input = b""
        self._input_fin = False

    def decompress(self, data: bytes, fin: bool, limit: int) -> bytes:
        """Inflate one frame's payload of a compressed message, producing at most `limit` bytes;
        raise MessageTooBig rather than inflate past it. `fin` ends the message (§7.2.2)."""
        self.feed(data, fin)
        out, done = self.inflate(limit + 1)
        if len(out) > limit or not done:
            raise MessageTooBig()
        return out

    def feed(self, data: bytes, fin: bool) -> None:
        """Start inflating one frame's payload; `inflate()` produces its output in steps. `fin`
        ends the message (§7.2.2: the empty block the sender removed is put back)."""
        if self._decompressor is None:  # a message's first frame
            self._decompressor = zlib.decompressobj(wbits=-self._inflate_bits, zdict=self._received_window)
        self._input = data + _EMPTY_BLOCK if fin else data
        self._input_fin = fin

    def inflate(self, max_length: int) -> Tuple[bytes, bool]:
        """Up to `max_length` (≥ 1) more bytes of the frame's output, and whether that is all
        of it. Never more: what is left stays in zlib's unconsumed input until the next call."""
        decompressor = self._decompressor
        assert decompressor is not None, "inflate() after feed()"
        out = decompressor.decompress(self._input, max_length)
        if out and not self.params.client_no_context_takeover:
            self._received_window = _window_after(self._received_window, out,
                                                  1 << self._inflate_bits)
        self._input = decompressor.unconsumed_tail
        # Done when every input byte went in and the output did not fill `max_length` (a full
        # output may have more behind it inside zlib, even with the input consumed).
        done = not self._input and len(out) < max_length
        if not done and not out and self._input:
            raise zlib.error("no progress inflating")  # cannot happen with valid zlib state
        if done:
            self._input = b""
            if self._input_fin:
                self._decompressor = None  # the window is in _received_window
        return out, done
