/* Incremental UTF-8 validation. See utf8.h. */
#include <string.h>
#include "utf8.h"

/* Byte classes: which bytes are interchangeable for every state. */
enum {
    C_ASCII = 0,  /* 00..7F */
    C_CONT_LO,    /* 80..8F continuation */
    C_CONT_MID,   /* 90..9F continuation */
    C_CONT_HI,    /* A0..BF continuation */
    C_LEAD2,      /* C2..DF: 2-byte sequence */
    C_E0,         /* E0: 3-byte, second byte A0..BF (no overlongs) */
    C_LEAD3,      /* E1..EC, EE..EF: 3-byte */
    C_ED,         /* ED: 3-byte, second byte 80..9F (no surrogates) */
    C_F0,         /* F0: 4-byte, second byte 90..BF (no overlongs) */
    C_LEAD4,      /* F1..F3: 4-byte */
    C_F4,         /* F4: 4-byte, second byte 80..8F (nothing above U+10FFFF) */
    C_INVALID,    /* C0, C1, F5..FF: never valid */
    N_CLASSES
};

/* States: what the next byte must be. */
enum {
    S_ACCEPT = ASGIWS_UTF8_ACCEPT,
    S_CONT1,      /* one continuation byte left */
    S_CONT2,      /* two continuation bytes left */
    S_E0,         /* after E0 */
    S_ED,         /* after ED */
    S_F0,         /* after F0 */
    S_CONT3,      /* after F1..F3: three continuation bytes left */
    S_F4,         /* after F4 */
    S_REJECT = ASGIWS_UTF8_REJECT,
    N_STATES
};

static uint8_t byte_class[256];
static uint8_t transitions[N_STATES][N_CLASSES];
static int tables_ready = 0;

static void build_tables(void)
{
    int b, s, c;
    for (b = 0x00; b <= 0x7F; b++) byte_class[b] = C_ASCII;
    for (b = 0x80; b <= 0x8F; b++) byte_class[b] = C_CONT_LO;
    for (b = 0x90; b <= 0x9F; b++) byte_class[b] = C_CONT_MID;
    for (b = 0xA0; b <= 0xBF; b++) byte_class[b] = C_CONT_HI;
    byte_class[0xC0] = byte_class[0xC1] = C_INVALID;
    for (b = 0xC2; b <= 0xDF; b++) byte_class[b] = C_LEAD2;
    byte_class[0xE0] = C_E0;
    for (b = 0xE1; b <= 0xEF; b++) byte_class[b] = C_LEAD3;
    byte_class[0xED] = C_ED;
    byte_class[0xF0] = C_F0;
    for (b = 0xF1; b <= 0xF3; b++) byte_class[b] = C_LEAD4;
    byte_class[0xF4] = C_F4;
    for (b = 0xF5; b <= 0xFF; b++) byte_class[b] = C_INVALID;

    for (s = 0; s < N_STATES; s++)
        for (c = 0; c < N_CLASSES; c++)
            transitions[s][c] = S_REJECT;

    transitions[S_ACCEPT][C_ASCII] = S_ACCEPT;
    transitions[S_ACCEPT][C_LEAD2] = S_CONT1;
    transitions[S_ACCEPT][C_E0] = S_E0;
    transitions[S_ACCEPT][C_LEAD3] = S_CONT2;
    transitions[S_ACCEPT][C_ED] = S_ED;
    transitions[S_ACCEPT][C_F0] = S_F0;
    transitions[S_ACCEPT][C_LEAD4] = S_CONT3;
    transitions[S_ACCEPT][C_F4] = S_F4;

    for (c = C_CONT_LO; c <= C_CONT_HI; c++) {
        transitions[S_CONT1][c] = S_ACCEPT;
        transitions[S_CONT2][c] = S_CONT1;
        transitions[S_CONT3][c] = S_CONT2;
    }
    transitions[S_E0][C_CONT_HI] = S_CONT1;
    transitions[S_ED][C_CONT_LO] = S_CONT1;
    transitions[S_ED][C_CONT_MID] = S_CONT1;
    transitions[S_F0][C_CONT_MID] = S_CONT2;
    transitions[S_F0][C_CONT_HI] = S_CONT2;
    transitions[S_F4][C_CONT_LO] = S_CONT2;
    tables_ready = 1;
}

uint32_t asgiws_utf8_feed(uint32_t state, const uint8_t *s, size_t len)
{
    size_t i = 0;

    if (!tables_ready) {
        build_tables();
    }
    while (i < len) {
        if (state == S_ACCEPT) {
            /* Fast path: skip ASCII 16 then 8 bytes at a time. */
            while (i + 16 <= len) {
                uint64_t a, b;
                memcpy(&a, s + i, 8);
                memcpy(&b, s + i + 8, 8);
                if ((a | b) & 0x8080808080808080ULL) break;
                i += 16;
            }
            if (i + 8 <= len) {
                uint64_t a;
                memcpy(&a, s + i, 8);
                if (!(a & 0x8080808080808080ULL)) {
                    i += 8;
                    continue;
                }
            }
            if (i >= len) break;
        }
        state = transitions[state][byte_class[s[i]]];
        if (state == S_REJECT) {
            return S_REJECT;  /* fail fast: the rest cannot make it valid */
        }
        i++;
    }
    return state;
}
