/* XOR masking of WebSocket payloads (RFC 6455 §5.3).
 *
 * Plain C, no Python API. One entry point, asgiws_mask(), dispatching at run time to the widest
 * kernel the CPU has: AVX2 or SSE2 on x86-64 (CPU detection), NEON on aarch64 (compile time),
 * else a portable 8-byte-word scalar loop. Every kernel takes the key already rotated to the
 * payload position it starts at, so a payload can be unmasked in pieces as it arrives.
 */
#ifndef ASGIWS_MASK_H
#define ASGIWS_MASK_H

#include <stddef.h>
#include <stdint.h>

/* dst[i] = src[i] ^ key[(offset + i) % 4] for i in [0, len). dst may equal src (in place);
 * otherwise the two must not overlap. No alignment requirement. */
void asgiws_mask(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t key[4], size_t offset);

/* Choose the kernel for this CPU. Called once at module import; asgiws_mask() calls it too if
 * it was not. Returns the name of the kernel chosen: "avx2", "sse2", "neon" or "scalar".
 * The environment variable ASGIWS_MASK_KERNEL=scalar|sse2 forces a narrower one (for tests). */
const char *asgiws_mask_init(void);

/* Kernels. `key` is the rotated key: key[i % 4] masks the byte at index i of this call.
 * Each returns the number of bytes it processed; the caller finishes the rest with
 * asgiws_mask_scalar. A kernel that returns less than len must have processed a multiple of 4,
 * so the key rotation of the rest is unchanged. */
size_t asgiws_mask_scalar(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t key[4]);
size_t asgiws_mask_sse2(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t key[4]);
size_t asgiws_mask_avx2(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t key[4]);
size_t asgiws_mask_neon(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t key[4]);

/* The little-endian key word for a run starting `shift` bytes into the key (key[shift] first).
 * Kernels that peel an unaligned head use it for the aligned part. */
static inline uint32_t asgiws_rotate_key32(uint32_t key32, size_t shift)
{
    shift &= 3;
    return shift ? (key32 >> (8 * shift)) | (key32 << (32 - 8 * shift)) : key32;
}

#endif
