/* SSE2 masking kernel (compiled with -msse2; part of the x86-64 baseline). See mask.h. */
#include "mask.h"

#if defined(__x86_64__) || defined(__i386__)
#include <emmintrin.h>
#include <string.h>

size_t asgiws_mask_sse2(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t key[4])
{
    int32_t key32;
    size_t i = 0;
    memcpy(&key32, key, 4);
    /* set1 replicates the 4 key bytes in memory order across the 16-byte lane. */
    const __m128i vkey = _mm_set1_epi32(key32);
    for (; i + 64 <= len; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(src + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(src + i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(src + i + 48));
        _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(a, vkey));
        _mm_storeu_si128((__m128i *)(dst + i + 16), _mm_xor_si128(b, vkey));
        _mm_storeu_si128((__m128i *)(dst + i + 32), _mm_xor_si128(c, vkey));
        _mm_storeu_si128((__m128i *)(dst + i + 48), _mm_xor_si128(d, vkey));
    }
    for (; i + 16 <= len; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
        _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(a, vkey));
    }
    return i;
}
#else
size_t asgiws_mask_sse2(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t key[4])
{
    (void)dst; (void)src; (void)len; (void)key;
    return 0;
}
#endif
