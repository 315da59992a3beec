/* retry — see retry.h.
 *
 * INVARIANT: for every i > 0, a[(i-1)/2]->due_ms <= a[i]->due_ms, and
 * a[i]->heap_idx == i. */
#include "retry.h"

#include <assert.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

void pd_rng_seed(pd_rng *r, uint64_t seed)
{
    r->x[0] = (unsigned short)seed;
    r->x[1] = (unsigned short)(seed >> 16);
    r->x[2] = (unsigned short)(seed >> 32 ^ seed >> 48);
}

double pd_rng_next(pd_rng *r)
{
    return erand48(r->x);
}

int64_t pd_backoff_ms(int retry, int64_t base_ms, int64_t max_ms, double u)
{
    assert(retry >= 1 && base_ms >= 0 && max_ms >= 0 && u >= 0 && u < 1);
    int64_t cap = base_ms;
    for (int i = 1; i < retry && cap < max_ms; i++)
        cap *= 2;
    if (cap > max_ms) cap = max_ms;
    return (int64_t)(u * (double)(cap + 1));
}

int64_t pd_retry_delay_ms(int retry, int64_t base_ms, int64_t max_ms, double u,
                          int64_t retry_after_ms, int64_t cap_ms)
{
    int64_t d = pd_backoff_ms(retry, base_ms, max_ms, u);
    if (retry_after_ms >= 0) {
        int64_t ra = retry_after_ms < cap_ms ? retry_after_ms : cap_ms;
        if (d < ra) d = ra;
    }
    return d;
}

int64_t pd_retry_after_ms(const char *v, time_t now_s)
{
    if (!v) return -1;
    while (*v == ' ' || *v == '\t')
        v++;
    if (!*v) return -1;
    if (isdigit((unsigned char)*v)) {
        size_t n = strspn(v, "0123456789");
        const char *rest = v + n;
        while (*rest == ' ' || *rest == '\t' || *rest == '\r' || *rest == '\n')
            rest++;
        if (!*rest) {
            if (n > 9) return 999999999LL * 1000; /* absurdly large: the cap applies */
            return strtoll(v, NULL, 10) * 1000;
        }
    }
    time_t t = curl_getdate(v, NULL);
    if (t == (time_t)-1) return -1;
    return t > now_s ? (int64_t)(t - now_s) * 1000 : 0;
}

static void heap_set(pd_heap *h, size_t i, pd_job *j)
{
    h->a[i] = j;
    j->heap_idx = i;
}

static void sift_up(pd_heap *h, size_t i)
{
    pd_job *j = h->a[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->a[p]->due_ms <= j->due_ms) break;
        heap_set(h, i, h->a[p]);
        i = p;
    }
    heap_set(h, i, j);
}

static void sift_down(pd_heap *h, size_t i)
{
    pd_job *j = h->a[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && h->a[c + 1]->due_ms < h->a[c]->due_ms) c++;
        if (j->due_ms <= h->a[c]->due_ms) break;
        heap_set(h, i, h->a[c]);
        i = c;
    }
    heap_set(h, i, j);
}

int pd_heap_push(pd_heap *h, pd_job *j)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        pd_job **a = realloc(h->a, cap * sizeof *a);
        if (!a) return -1;
        h->a = a;
        h->cap = cap;
    }
    h->a[h->n++] = j;
    sift_up(h, h->n - 1);
    return 0;
}

pd_job *pd_heap_peek(const pd_heap *h)
{
    return h->n ? h->a[0] : NULL;
}

void pd_heap_remove(pd_heap *h, pd_job *j)
{
    size_t i = j->heap_idx;
    assert(i < h->n && h->a[i] == j);
    pd_job *last = h->a[--h->n];
    if (i < h->n) {
        heap_set(h, i, last);
        sift_up(h, i);
        sift_down(h, last->heap_idx);
    }
}

pd_job *pd_heap_pop(pd_heap *h)
{
    pd_job *j = pd_heap_peek(h);
    if (j) pd_heap_remove(h, j);
    return j;
}

void pd_heap_free(pd_heap *h)
{
    free(h->a);
    memset(h, 0, sizeof *h);
}
