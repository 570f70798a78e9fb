"""permessage-deflate (RFC 7692): negotiation, compression and bounded decompression.

Memory per connection, with the defaults (window bits 12, memLevel 5, context takeover):
the compressor holds 2**(12+2) + 2**(5+9) = 32 KiB, the decompressor 2**12 = 4 KiB plus ~7 KiB
of zlib state: about 43 KiB. With `server_no_context_takeover` the compressor lives only while
a message is compressed; with `client_no_context_takeover` the decompressor is reset per message.
"""

from __future__ import annotations

import zlib
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

    server_max_window_bits: int = 12
    client_max_window_bits: int = 12
    mem_level: int = 5
    compress_level: int = zlib.Z_DEFAULT_COMPRESSION


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


class PerMessageDeflate:
    """Compresses outgoing and inflates incoming messages for one connection."""

    def __init__(self, params: DeflateParameters, settings: DeflateSettings):
        self.params = params
        self.settings = settings
        # zlib cannot inflate with a 256-byte window; a larger window inflates the same data.
        self._inflate_bits = max(9, params.client_max_window_bits)
        self._decompressor = zlib.decompressobj(wbits=-self._inflate_bits)
        self._compressor = None if params.server_no_context_takeover else self._new_compressor()
        # The frame being inflated: its input not yet consumed, and whether it ends a message.
        self._input = b""
        self._input_fin = False

    def _new_compressor(self) -> "zlib._Compress":
        return zlib.compressobj(self.settings.compress_level, zlib.DEFLATED,
                                -self.params.server_max_window_bits, self.settings.mem_level)

    def compress(self, data: bytes) -> bytes:
        """A whole message's payload for a frame with RSV1 set (RFC 7692 §7.2.1)."""
        compressor = self._compressor or self._new_compressor()
        out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if out.endswith(_EMPTY_BLOCK):
            out = out[:-4]
        return out or b"\x00"  # an empty message compresses to one empty block byte

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
        self._input = data + _EMPTY_BLOCK if fin else data
        self._input_fin = fin

    def inflate(self, max_length: int) -> Tuple[bytes, bool]:
        """Up to `max_length` (≥ 1) more bytes of the frame's output, and whether that is all
        of it. Never more: what is left stays in zlib's unconsumed input until the next call."""
        decompressor = self._decompressor
        out = decompressor.decompress(self._input, max_length)
        self._input = decompressor.unconsumed_tail
        # Done when every input byte went in and the output did not fill `max_length` (a full
        # output may have more behind it inside zlib, even with the input consumed).
        done = not self._input and len(out) < max_length
        if not done and not out and self._input:
            raise zlib.error("no progress inflating")  # cannot happen with valid zlib state
        if done:
            self._input = b""
            if self._input_fin and self.params.client_no_context_takeover:
                self._decompressor = zlib.decompressobj(wbits=-self._inflate_bits)
        return out, done
