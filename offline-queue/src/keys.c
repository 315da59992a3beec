/* keys — building the store's RocksDB keys. See keys.h for the layout. */
#include "keys.h"

#include <assert.h>
#include <string.h>

/* Empty k, to build a key from the start. */
void key_reset(key *k)
{
    k->len = 0;
}

/* Append a one-byte tag ('c', 'i', 'p', 't', 'm', 'u'). */
void key_tag(key *k, char tag)
{
    /* A tag only starts a key. */
    assert(k->len == 0);
    k->buf[k->len++] = tag;
}

/* Append id and its NUL. Callers validate identifiers (1..MQC_ID_MAX
 * bytes) before building keys, so the buffer never overflows: KEY_MAX
 * covers the longest layout in keys.h. */
void key_id(key *k, const char *id)
{
    size_t n = strlen(id);
    /* Identifiers are 1..MQC_ID_MAX bytes, and the key stays within KEY_MAX. */
    assert(n >= 1 && n <= MQC_ID_MAX && k->len + n + 1 <= KEY_MAX);
    memcpy(k->buf + k->len, id, n);
    k->len += n;
    k->buf[k->len++] = '\0';
}

/* Append id without a NUL (the last component of a key). */
void key_raw(key *k, const char *id)
{
    size_t n = strlen(id);
    /* Identifiers are 1..MQC_ID_MAX bytes, and the key stays within KEY_MAX. */
    assert(n >= 1 && n <= MQC_ID_MAX && k->len + n <= KEY_MAX);
    memcpy(k->buf + k->len, id, n);
    k->len += n;
}

/* Store v at p as 8 big-endian bytes. */
void put_be64(char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (char)(v & 0xff);
        v >>= 8;
    }
}

/* The 8 big-endian bytes at p as a number. */
uint64_t get_be64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | (unsigned char)p[i];
    return v;
}

/* Append v as 8 big-endian bytes. */
void key_u64(key *k, uint64_t v)
{
    /* The key stays within KEY_MAX. */
    assert(k->len + 8 <= KEY_MAX);
    put_be64(k->buf + k->len, v);
    k->len += 8;
}

/* The exclusive upper bound of the keys that start with k (keys.h). */
void key_prefix_end(const key *k, key *end)
{
    /* Our prefixes always end in a NUL (after an identifier) or a tag byte,
     * never in 0xff, so incrementing the last byte cannot carry. */
    assert(k->len > 0 && (unsigned char)k->buf[k->len - 1] != 0xff);
    *end = *k;
    end->buf[end->len - 1]++;
}

void key_page(key *lo, key *hi, key *from, char tag, const char *id, const char *after)
{
    key_reset(lo);
    key_tag(lo, tag);
    key_id(lo, id);
    key_prefix_end(lo, hi);
    *from = *lo;
    if (after && after[0]) key_id(from, after);
}
