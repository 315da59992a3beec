/* mqc_utf8 — UTF-8 well-formedness (RFC 3629), for the text the server
 * stores or echoes: JSON (RFC 8259) and protobuf `string` fields must be
 * UTF-8, and a strict proto3 client refuses a message that is not. */
#ifndef MQC_UTF8_H
#define MQC_UTF8_H

#include <stddef.h>

/* 1 if p[0..n) is well-formed UTF-8: no overlongs, no surrogates, nothing
 * above U+10FFFF; else 0. */
int mqc_utf8_valid(const void *p, size_t n);

#endif
