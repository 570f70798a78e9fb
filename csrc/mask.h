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
 * Each returns the number of bytes it processed (a multiple of its width); the caller finishes
 * the tail with asgiws_mask_scalar, whose rotation is unchanged since widths are multiples of 4. */
size_t asgiws_mask_scalar(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t key[4]);
size_t asgiws_mask_sse2(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t key[4]);
size_t asgiws_mask_avx2(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t key[4]);
size_t asgiws_mask_neon(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t key[4]);

#endif
