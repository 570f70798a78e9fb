"""asgiws._codec masking (mask, mask_inplace, mask_impl) against the pure-Python reference; the
tests that are not about the C kernels run the pure-Python fallback (asgiws._codec_py) too."""

import os
import platform

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

KEYS = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x12\x34\x56\x78", b"\xa5\x0f\xf0\x5a"]
MAX_ALIGN = 64
EXHAUSTIVE_MAX_LEN = 4096

keys = st.binary(min_size=4, max_size=4)


def random_buffer(size: int, seed: int = 0) -> bytes:
    return bytes((i * 197 + seed * 31 + (i >> 8) * 13) & 0xFF for i in range(size))


@pytest.fixture(scope="module")
def source() -> bytes:
    return os.urandom(EXHAUSTIVE_MAX_LEN + MAX_ALIGN + 64)


def expected_by_phase(source: bytes, key: bytes) -> list[bytes]:
    """expected[p] = reference mask of the whole source starting at key position p.

    mask(source[a:a+n], key, k) == expected[(k - a) % 4][a:a+n] by the definition of masking, so
    four reference calls cover every alignment and key offset."""
    return [_reference.mask(source, key, phase) for phase in range(4)]


@NEEDS_EXTENSION
def test_mask_every_length_alignment_and_offset(source, key=KEYS[2]):
    expected = expected_by_phase(source, key)
    view = memoryview(source)
    for length in range(EXHAUSTIVE_MAX_LEN + 1):
        for align in range(MAX_ALIGN):
            for offset in range(4):
                result = _codec.mask(view[align : align + length], key, offset)
                if result != expected[(offset - align) % 4][align : align + length]:
                    pytest.fail(f"mask wrong at length={length} align={align} offset={offset}")
                assert type(result) is bytes
    assert bytes(view) == source  # the input is left alone


@NEEDS_EXTENSION
def test_mask_inplace_every_length_alignment_and_offset(source, key=KEYS[3]):
    expected = expected_by_phase(source, key)
    buffer = bytearray(source)
    view = memoryview(buffer)
    for length in range(EXHAUSTIVE_MAX_LEN + 1):
        for align in range(MAX_ALIGN):
            for offset in range(4):
                end = align + length
                assert _codec.mask_inplace(view[align:end], key, offset) is None
                if buffer[align:end] != expected[(offset - align) % 4][align:end]:
                    pytest.fail(f"mask_inplace wrong at length={length} align={align} "
                                f"offset={offset}")
                # Nothing written outside the slice.
                after = slice(end, end + 64)
                if buffer[:align] != source[:align] or buffer[after] != source[after]:
                    pytest.fail(f"mask_inplace wrote outside length={length} align={align}")
                buffer[align:end] = source[align:end]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("key", KEYS)
def test_mask_bytes_bytearray_memoryview_agree(codec, key):
    data = random_buffer(1000, 1)
    expected = _reference.mask(data, key)
    assert codec.mask(data, key) == expected
    assert codec.mask(bytearray(data), key) == expected
    assert codec.mask(memoryview(data), key) == expected
    inplace = bytearray(data)
    codec.mask_inplace(inplace, key)
    assert inplace == expected


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=5000),
    key=keys,
    offset=st.integers(0, 2**31),
    align=st.integers(0, MAX_ALIGN - 1),
)
def test_mask_matches_reference(codec, data, key, offset, align):
    buffer = bytearray(align) + bytearray(data)
    view = memoryview(buffer)[align:]
    expected = _reference.mask(data, key, offset)
    assert codec.mask(view, key, offset) == expected
    codec.mask_inplace(view, key, offset)
    assert bytes(view) == expected
    assert buffer[:align] == bytes(align)


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=4, deadline=None)
@given(
    length=st.integers(4097, 1 << 20),
    key=keys,
    offset=st.integers(0, 3),
    align=st.integers(0, MAX_ALIGN - 1),
)
def test_mask_large(codec, length, key, offset, align):
    data = os.urandom(length + align)
    view = memoryview(data)[align:]
    expected = _reference.mask(view, key, offset)
    assert codec.mask(view, key, offset) == expected
    buffer = bytearray(data)
    codec.mask_inplace(memoryview(buffer)[align:], key, offset)
    assert buffer[align:] == expected
    assert buffer[:align] == data[:align]


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=150, deadline=None)
@given(
    data=st.one_of(st.binary(max_size=3000), st.integers(3000, 200_000).map(os.urandom)),
    key=keys,
    cuts=st.lists(st.integers(0, 200_000), max_size=12),
)
def test_unmask_in_pieces_carrying_the_offset(codec, data, key, cuts):
    """A payload unmasked as it arrives, piece by piece, equals the payload unmasked whole."""
    bounds = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    pieces = [data[start:end] for start, end in zip(bounds, bounds[1:])]
    whole = codec.mask(data, key)
    assert b"".join(codec.mask(piece, key, start) for piece, start in zip(pieces, bounds)) == whole
    buffer = bytearray(data)
    view = memoryview(buffer)
    for start, end in zip(bounds, bounds[1:]):
        codec.mask_inplace(view[start:end], key, start)
    assert buffer == whole
    if len(data) <= 3000:
        assert whole == _reference.mask(data, key)


@pytest.mark.parametrize("codec", CODECS)
def test_mask_is_an_involution(codec):
    data = os.urandom(100_003)
    key = b"\x01\x02\x03\x04"
    assert codec.mask(codec.mask(data, key, 3), key, 3) == data


@NEEDS_EXTENSION
def test_mask_impl_names_a_kernel():
    impl = _codec.mask_impl()
    assert impl in {"avx2", "sse2", "neon", "scalar"}
    # ASGIWS_MASK_KERNEL (set when the whole suite runs on a forced kernel) overrides detection.
    if platform.machine() in ("x86_64", "AMD64") and "ASGIWS_MASK_KERNEL" not in os.environ:
        flags = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else []
        assert impl == ("avx2" if "avx2" in flags else "sse2")


@pytest.mark.parametrize("codec", CODECS)
def test_mask_inplace_refuses_read_only_buffers(codec):
    with pytest.raises((TypeError, BufferError, ValueError)):
        codec.mask_inplace(b"immutable bytes", b"abcd")
    with pytest.raises((TypeError, BufferError, ValueError)):
        codec.mask_inplace(memoryview(b"immutable bytes"), b"abcd")


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("key", [b"", b"abc", b"abcde"])
def test_mask_refuses_a_key_that_is_not_4_bytes(codec, key):
    with pytest.raises((ValueError, TypeError)):
        codec.mask(b"payload", key)
    with pytest.raises((ValueError, TypeError)):
        codec.mask_inplace(bytearray(b"payload"), key)


@NEEDS_EXTENSION
@pytest.mark.parametrize("kernel", ["scalar", "sse2"])
def test_every_kernel_matches_the_reference(kernel):
    """The machine's best kernel is what the other tests exercise; ASGIWS_MASK_KERNEL forces
    the narrower ones, in a fresh interpreter since the choice is made at import. Lengths around
    the kernels' 256-byte alignment threshold run at every start alignment up to 64, so each
    head a kernel peels (and the key rotation after it) is covered, in place and out of place."""
    import platform
    import subprocess
    import sys

    if kernel == "sse2" and platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("SSE2 is an x86-64 kernel")
    script = (
        "import os, random\n"
        "from asgiws import _codec, _reference\n"
        f"assert _codec.mask_impl() == {kernel!r}, _codec.mask_impl()\n"
        "rng = random.Random(7)\n"
        "for n in list(range(0, 320)) + [4096, 65537]:\n"
        "    data = bytes(rng.getrandbits(8) for _ in range(n))\n"
        "    key = bytes(rng.getrandbits(8) for _ in range(4))\n"
        "    for offset in range(4):\n"
        "        for start in (range(64) if n >= 250 else (0, 1, 3)):\n"
        "            view = memoryview(bytearray(b'.' * start + data))[start:]\n"
        "            expected = _reference.mask(data, key, offset)\n"
        "            assert _codec.mask(view, key, offset) == expected\n"
        "            _codec.mask_inplace(view, key, offset)\n"
        "            assert bytes(view) == expected\n"
    )
    env = dict(os.environ, ASGIWS_MASK_KERNEL=kernel)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                            timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr
