/* Incremental UTF-8 validation (RFC 3629, as Python's strict decoder applies it).
 *
 * A table-driven state machine whose state carries across chunks, so a fragmented WebSocket text
 * message is validated as it arrives and fails on the fragment carrying the bad byte (RFC 6455
 * §8.1). Rejects overlong forms, surrogates (U+D800..U+DFFF), code points above U+10FFFF and,
 * at the end of a message, a sequence cut off. ASCII runs are skipped eight bytes at a time.
 */
#ifndef ASGIWS_UTF8_H
#define ASGIWS_UTF8_H

#include <stddef.h>
#include <stdint.h>

#define ASGIWS_UTF8_ACCEPT 0u  /* between characters: a message may end here */
#define ASGIWS_UTF8_REJECT 8u  /* invalid; sticky */

/* Feed `len` bytes to a validator in `state`; returns the new state. A message is valid when the
 * state after its last byte is ASGIWS_UTF8_ACCEPT. */
uint32_t asgiws_utf8_feed(uint32_t state, const uint8_t *s, size_t len);

#endif
