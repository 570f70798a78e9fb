"""asgiws._codec UTF-8 validation (utf8_valid, Utf8Validator) against the reference state machine
in asgiws._reference and against CPython's strict decoder; the pure-Python fallback's
(asgiws._codec_py, which uses that decoder) too."""

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgiws import _codec_py, _reference

try:
    from asgiws import _codec
except ImportError:  # not built: the pure-Python codec is still compared with the reference
    _codec = None

# The codecs under test: the extension and the pure-Python runtime fallback (asgiws._codec_py).
NEEDS_EXTENSION = pytest.mark.skipif(_codec is None, reason="asgiws._codec is not built")
CODECS = [pytest.param(_codec, id="cython", marks=NEEDS_EXTENSION), pytest.param(_codec_py, id="python")]


def decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def char_prefixes() -> frozenset:
    """Every proper prefix of the UTF-8 encoding of every scalar value (not a surrogate)."""
    prefixes = set()
    for code_point in range(0x80, 0x110000):
        if 0xD800 <= code_point <= 0xDFFF:
            continue
        encoded = chr(code_point).encode("utf-8")
        for end in range(1, len(encoded)):
            prefixes.add(encoded[:end])
    return frozenset(prefixes)


def is_valid_prefix(data: bytes) -> bool:
    """Can `data` be continued into valid UTF-8? (An oracle independent of both validators:
    CPython's incremental decoder accepts b"\\xed\\xa0" as a prefix, so it cannot be one.)"""
    for tail in range(0, min(3, len(data)) + 1):
        head, rest = data[: len(data) - tail], data[len(data) - tail :]
        if (not rest or rest in char_prefixes()) and decodes(head):
            return True
    return False


def encode_with_length(code_point: int, length: int) -> bytes:
    """The UTF-8 bit pattern of `code_point` in `length` bytes, overlong or out of range."""
    if length == 1:
        return bytes([code_point])
    lead_marks = {2: 0xC0, 3: 0xE0, 4: 0xF0, 5: 0xF8, 6: 0xFC}
    tail = []
    for _ in range(length - 1):
        tail.append(0x80 | (code_point & 0x3F))
        code_point >>= 6
    return bytes([lead_marks[length] | code_point] + tail[::-1])


# Pieces the generated inputs are made of, each valid or a specific kind of invalid.
ascii_runs = st.binary(max_size=40).map(lambda b: bytes(x & 0x7F for x in b))
valid_chars = st.characters(codec="utf-8").map(lambda c: c.encode("utf-8"))
valid_text = st.text(max_size=40).map(lambda s: s.encode("utf-8"))
surrogates = st.integers(0xD800, 0xDFFF).map(lambda cp: chr(cp).encode("utf-8", "surrogatepass"))
overlongs = st.one_of(
    st.integers(0, 0x7F).map(lambda cp: encode_with_length(cp, 2)),
    st.integers(0, 0x7FF).map(lambda cp: encode_with_length(cp, 3)),
    st.integers(0, 0xFFFF).map(lambda cp: encode_with_length(cp, 4)),
)
beyond_unicode = st.one_of(
    st.integers(0x110000, 0x1FFFFF).map(lambda cp: encode_with_length(cp, 4)),
    st.integers(0, 0x3FFFFFF).map(lambda cp: encode_with_length(cp, 5)),
    st.integers(0, 0x7FFFFFFF).map(lambda cp: encode_with_length(cp, 6)),
)
truncated_chars = st.tuples(st.characters(min_codepoint=0x80, codec="utf-8"), st.integers(1, 3)).map(
    lambda pair: pair[0].encode("utf-8")[: -pair[1]] or pair[0].encode("utf-8")[:1]
)
stray_bytes = st.integers(0x80, 0xFF).map(lambda b: bytes([b]))
pieces = st.one_of(
    ascii_runs, valid_chars, valid_text, surrogates, overlongs, beyond_unicode,
    truncated_chars, stray_bytes,
)


@st.composite
def corrupted_text(draw):
    encoded = bytearray(draw(st.text(min_size=1, max_size=60)).encode("utf-8"))
    encoded[draw(st.integers(0, len(encoded) - 1))] = draw(st.integers(0, 255))
    return bytes(encoded)


utf8_inputs = st.one_of(
    st.binary(max_size=200),
    valid_text,
    st.text(max_size=300).map(lambda s: s.encode("utf-8")),
    corrupted_text(),
    st.lists(pieces, max_size=12).map(b"".join),
    st.lists(st.one_of(valid_chars, ascii_runs), max_size=12).map(b"".join),
)


def check_whole(data: bytes) -> None:
    expected = decodes(data)
    assert _reference.utf8_valid(data) is expected, data
    for codec in (_codec, _codec_py) if _codec is not None else (_codec_py,):
        assert codec.utf8_valid(data) is expected, (codec.__name__, data)
        assert codec.utf8_valid(bytearray(data)) is expected
        assert codec.utf8_valid(memoryview(data)) is expected
        validator = codec.Utf8Validator()
        assert (validator.feed(data) and validator.final()) is expected


@settings(max_examples=1500, deadline=None)
@given(utf8_inputs)
def test_utf8_valid_matches_strict_decode(data):
    check_whole(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\x7f",
        b"\x80",
        b"\xbf",
        b"\xc0\x80",  # overlong NUL
        b"\xc1\xbf",  # overlong
        b"\xc2\x80",  # U+0080
        b"\xdf\xbf",  # U+07FF
        b"\xe0\x9f\xbf",  # overlong U+07FF
        b"\xe0\xa0\x80",  # U+0800
        b"\xed\x9f\xbf",  # U+D7FF
        b"\xed\xa0\x80",  # U+D800 surrogate
        b"\xed\xbf\xbf",  # U+DFFF surrogate
        b"\xee\x80\x80",  # U+E000
        b"\xef\xbf\xbf",  # U+FFFF
        b"\xf0\x8f\xbf\xbf",  # overlong U+FFFF
        b"\xf0\x90\x80\x80",  # U+10000
        b"\xf4\x8f\xbf\xbf",  # U+10FFFF
        b"\xf4\x90\x80\x80",  # U+110000
        b"\xf5\x80\x80\x80",
        b"\xf8\x88\x80\x80\x80",
        b"\xfe",
        b"\xff",
        b"\xe2\x82",  # truncated euro sign
        b"\xf0\x9f\x98",  # truncated emoji
        b"\xe2\x82\xac\x80",  # stray continuation after a char
        "κόσμε".encode(),
    ],
)
def test_utf8_boundary_cases(data):
    check_whole(data)


TAILS = [
    "é".encode(),
    "€".encode(),
    "😀".encode(),
    b"\xed\xa0\x80",  # surrogate
    b"\xc0\xaf",  # overlong
    b"\xf4\x90\x80\x80",  # > U+10FFFF
    b"\xe2\x82",  # truncated
    b"\xff",
    b"\x80",
]


@NEEDS_EXTENSION
@pytest.mark.parametrize("tail", TAILS)
def test_ascii_runs_of_every_length_then_a_multibyte_char(tail):
    """The C validator skips ASCII eight bytes at a time: every run length and alignment must
    hand over to the byte-wise state machine at the right byte."""
    expected_with_tail = decodes(tail)
    source = bytes(range(0x20, 0x7F)) * 8
    for length in range(0, 300):
        for align in range(0, 16):
            buffer = bytearray(align) + source[:length] + tail + b"abc"
            view = memoryview(buffer)[align:]
            assert _codec.utf8_valid(view) is expected_with_tail, (length, align, tail)
            without_trailer = view[: len(view) - 3]
            assert _codec.utf8_valid(without_trailer) is expected_with_tail, (length, align, tail)
        # A bad byte at every position of an ASCII run.
        if length:
            assert _codec.utf8_valid(source[:length] + tail) is expected_with_tail
            for position in range(length):
                corrupted = bytearray(source[:length])
                corrupted[position] = 0x80
                assert _codec.utf8_valid(corrupted) is False, (length, position)


def feed_in_pieces(validator, data: bytes, cuts) -> bool:
    verdicts = []
    for start, end in zip(cuts, cuts[1:]):
        verdicts.append(validator.feed(data[start:end]))
    return all(verdicts) and validator.final()


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=300, deadline=None)
@given(st.one_of(st.lists(pieces, max_size=6).map(b"".join), corrupted_text(), valid_text))
def test_incremental_split_at_every_point(codec, data):
    expected = decodes(data)
    for split in range(len(data) + 1):
        for validator in (codec.Utf8Validator(), _reference.Utf8Validator()):
            assert feed_in_pieces(validator, data, [0, split, len(data)]) is expected, (data, split)


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=300, deadline=None)
@given(utf8_inputs, st.lists(st.integers(0, 400), max_size=20))
def test_incremental_random_splits(codec, data, cuts):
    bounds = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    expected = decodes(data)
    assert feed_in_pieces(codec.Utf8Validator(), data, bounds) is expected
    assert feed_in_pieces(_reference.Utf8Validator(), data, bounds) is expected


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=500, deadline=None)
@given(utf8_inputs, st.lists(st.integers(0, 400), max_size=20))
def test_feed_fails_on_the_chunk_that_makes_the_prefix_invalid(codec, data, cuts):
    bounds = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    codec_validator = codec.Utf8Validator()
    reference_validator = _reference.Utf8Validator()
    end = 0
    for start, end in zip(bounds, bounds[1:]):
        expected = is_valid_prefix(data[:end])
        assert codec_validator.feed(data[start:end]) is expected, (data, end)
        assert reference_validator.feed(data[start:end]) is expected, (data, end)
        if not expected:
            break
    assert codec_validator.final() is decodes(data[:end])


@pytest.mark.parametrize("codec", CODECS)
def test_validator_failure_is_sticky_until_reset(codec):
    validator = codec.Utf8Validator()
    assert validator.feed(b"ok \xe2\x82") is True
    assert validator.final() is False  # cut off
    assert validator.feed(b"\xac") is True
    assert validator.final() is True
    assert validator.feed(b"\xc0") is False
    assert validator.feed(b"plain ascii") is False
    assert validator.feed(b"") is False
    assert validator.final() is False
    validator.reset()
    assert validator.final() is True
    assert validator.feed("é".encode()) is True
    assert validator.final() is True


@pytest.mark.parametrize("codec", CODECS)
def test_validator_reset_clears_a_pending_sequence(codec):
    validator = codec.Utf8Validator()
    assert validator.feed(b"\xf0\x9f") is True
    validator.reset()
    assert validator.feed(b"a") is True  # no longer a continuation of the reset bytes
    assert validator.final() is True


@pytest.mark.parametrize("codec", CODECS)
def test_validator_empty_chunks(codec):
    validator = codec.Utf8Validator()
    assert validator.final() is True
    assert validator.feed(b"") is True
    assert validator.feed(b"\xe2") is True
    assert validator.feed(b"") is True
    assert validator.final() is False


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=20, deadline=None)
@given(st.text(min_size=1, max_size=50), st.integers(1000, 300_000))
def test_large_inputs(codec, text, repeat):
    encoded = (text.encode("utf-8") * (repeat // len(text) + 1))[:repeat]
    assert codec.utf8_valid(encoded) is decodes(encoded)
    bad = bytearray(encoded)
    bad[len(bad) // 2] = 0xFF
    assert codec.utf8_valid(bad) is False


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("prefix", [b"\xed\xa0", b"ok \xed\xbf", b"\xe0\x80", b"\xf4\x90"])
def test_a_prefix_no_character_starts_with_fails_at_once(codec, prefix):
    """CPython's incremental decoder leaves a surrogate's first two bytes (ED A0..BF) for the
    final decode; the fallback must refuse them as soon as they arrive, as the C DFA does
    (found by hypothesis in test_feed_fails_on_the_chunk_that_makes_the_prefix_invalid)."""
    validator = codec.Utf8Validator()
    assert validator.feed(prefix) is False
    assert _reference.Utf8Validator().feed(prefix) is False
