/* keys — building the store's RocksDB keys. See keys.h for the layout. */
#include "keys.h"

#include <string.h>

void key_reset(key *k)
{
    k->len = 0;
}

void key_tag(key *k, char tag)
{
    k->buf[k->len++] = tag;
}

/* Callers validate identifiers (1..128 bytes) before building keys, so the
 * buffer never overflows: KEY_MAX covers the longest layout in keys.h. */
void key_id(key *k, const char *id)
{
    size_t n = strlen(id);
    memcpy(k->buf + k->len, id, n);
    k->len += n;
    k->buf[k->len++] = '\0';
}

void key_raw(key *k, const char *id)
{
    size_t n = strlen(id);
    memcpy(k->buf + k->len, id, n);
    k->len += n;
}

void put_be64(char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (char)(v & 0xff);
        v >>= 8;
    }
}

uint64_t get_be64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | (unsigned char)p[i];
    return v;
}

void key_u64(key *k, uint64_t v)
{
    put_be64(k->buf + k->len, v);
    k->len += 8;
}

void key_prefix_end(const key *k, key *end)
{
    /* Our prefixes always end in a NUL (after an identifier) or a tag byte,
     * never in 0xff, so incrementing the last byte cannot carry. */
    *end = *k;
    end->buf[end->len - 1]++;
}
