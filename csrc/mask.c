/* Portable scalar masking kernel and the run-time dispatcher. See mask.h. */
#include <stdlib.h>
#include <string.h>
#include "mask.h"

#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#define ASGIWS_HAVE_NEON 1
#endif

typedef size_t (*mask_kernel)(uint8_t *, const uint8_t *, size_t, const uint8_t *);

static mask_kernel selected_kernel = NULL;
static const char *selected_name = "scalar";

size_t asgiws_mask_scalar(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t key[4])
{
    /* Eight bytes per step through memcpy, which compilers turn into unaligned loads/stores:
     * correct at any alignment and as fast as aligned access on every CPU we target. */
    uint64_t key64;
    uint8_t key8[8];
    size_t i = 0;

    memcpy(key8, key, 4);
    memcpy(key8 + 4, key, 4);
    memcpy(&key64, key8, 8);
    for (; i + 8 <= len; i += 8) {
        uint64_t word;
        memcpy(&word, src + i, 8);
        word ^= key64;
        memcpy(dst + i, &word, 8);
    }
    for (; i < len; i++) {
        dst[i] = src[i] ^ key[i & 3];
    }
    return len;
}

#ifdef ASGIWS_HAVE_NEON
size_t asgiws_mask_neon(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t key[4])
{
    uint8_t key16[16];
    size_t i = 0;
    for (int k = 0; k < 16; k++) key16[k] = key[k & 3];
    uint8x16_t vkey = vld1q_u8(key16);
    for (; i + 64 <= len; i += 64) {
        vst1q_u8(dst + i, veorq_u8(vld1q_u8(src + i), vkey));
        vst1q_u8(dst + i + 16, veorq_u8(vld1q_u8(src + i + 16), vkey));
        vst1q_u8(dst + i + 32, veorq_u8(vld1q_u8(src + i + 32), vkey));
        vst1q_u8(dst + i + 48, veorq_u8(vld1q_u8(src + i + 48), vkey));
    }
    for (; i + 16 <= len; i += 16) {
        vst1q_u8(dst + i, veorq_u8(vld1q_u8(src + i), vkey));
    }
    return i;
}
#endif

const char *asgiws_mask_init(void)
{
    const char *forced;
    if (selected_kernel != NULL) {
        return selected_name;
    }
    /* ASGIWS_MASK_KERNEL=scalar|sse2 forces a narrower kernel (tests cover every kernel this
     * way on a machine whose best is AVX2). Never wider than the CPU has. */
    forced = getenv("ASGIWS_MASK_KERNEL");
    if (forced != NULL && strcmp(forced, "scalar") == 0) {
        selected_kernel = asgiws_mask_scalar;
        selected_name = "scalar";
        return selected_name;
    }
#if defined(__x86_64__)
    if (forced != NULL && strcmp(forced, "sse2") == 0) {
        selected_kernel = asgiws_mask_sse2;
        selected_name = "sse2";
        return selected_name;
    }
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) {
        selected_kernel = asgiws_mask_avx2;
        selected_name = "avx2";
    } else {
        /* SSE2 is part of the x86-64 baseline. */
        selected_kernel = asgiws_mask_sse2;
        selected_name = "sse2";
    }
#elif defined(ASGIWS_HAVE_NEON)
    selected_kernel = asgiws_mask_neon;
    selected_name = "neon";
#else
    selected_kernel = asgiws_mask_scalar;
    selected_name = "scalar";
#endif
    return selected_name;
}

void asgiws_mask(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t key[4], size_t offset)
{
    uint8_t rotated[4];
    size_t done = 0;

    rotated[0] = key[offset & 3];
    rotated[1] = key[(offset + 1) & 3];
    rotated[2] = key[(offset + 2) & 3];
    rotated[3] = key[(offset + 3) & 3];
    if (selected_kernel == NULL) {
        asgiws_mask_init();
    }
    /* Below 16 bytes a vector kernel has nothing to do; skip the indirect call. */
    if (len >= 16) {
        done = selected_kernel(dst, src, len, rotated);
    }
    if (done < len) {
        asgiws_mask_scalar(dst + done, src + done, len - done, rotated);
    }
}
