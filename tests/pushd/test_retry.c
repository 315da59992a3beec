/* test_retry — backoff with full jitter, Retry-After (seconds and HTTP
 * dates), and the retry heap (pushd/src/retry.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "retry.h"

static void backoff_bounds(void **state)
{
    /* retry n waits in [0, min(max, base * 2^(n-1))] */
    assert_int_equal(pd_backoff_ms(1, 100, 10000, 0.0), 0);
    assert_int_equal(pd_backoff_ms(1, 100, 10000, 0.999999), 100);
    assert_int_equal(pd_backoff_ms(2, 100, 10000, 0.999999), 200);
    assert_int_equal(pd_backoff_ms(4, 100, 10000, 0.999999), 800);
    assert_int_equal(pd_backoff_ms(8, 100, 10000, 0.999999), 10000);
    assert_int_equal(pd_backoff_ms(60, 100, 10000, 0.999999), 10000);
    assert_int_equal(pd_backoff_ms(3, 100, 10000, 0.5), 200);
}

/* Full jitter: the spread covers the whole range, evenly. */
static void jitter_spread(void **state)
{
    pd_rng r;
    pd_rng_seed(&r, 12345);
    int buckets[10] = {0};
    for (int i = 0; i < 20000; i++) {
        double u = pd_rng_next(&r);
        assert_true(u >= 0 && u < 1);
        int64_t d = pd_backoff_ms(3, 250, 60000, u); /* [0, 1000] */
        assert_true(d >= 0 && d <= 1000);
        buckets[d >= 1000 ? 9 : d / 100]++;
    }
    for (int b = 0; b < 10; b++)
        assert_true(buckets[b] > 1600 && buckets[b] < 2400);
    pd_rng r2;
    pd_rng_seed(&r2, 54321);
    assert_true(pd_rng_next(&r2) != pd_rng_next(&r)); /* seeds differ -> streams differ */
}

static void retry_after_floor(void **state)
{
    /* Retry-After raises the delay to at least itself, capped. */
    assert_int_equal(pd_retry_delay_ms(1, 100, 10000, 0.5, -1, 60000), 50);
    assert_int_equal(pd_retry_delay_ms(1, 100, 10000, 0.5, 3000, 60000), 3000);
    assert_int_equal(pd_retry_delay_ms(8, 100, 10000, 0.99, 3000, 60000), 9900);
    assert_int_equal(pd_retry_delay_ms(1, 100, 10000, 0.5, 7200000, 60000), 60000);
}

static void retry_after_parse(void **state)
{
    time_t now = 1700000000; /* Tue, 14 Nov 2023 22:13:20 GMT */
    assert_int_equal(pd_retry_after_ms(NULL, now), -1);
    assert_int_equal(pd_retry_after_ms("", now), -1);
    assert_int_equal(pd_retry_after_ms("0", now), 0);
    assert_int_equal(pd_retry_after_ms("120", now), 120000);
    assert_int_equal(pd_retry_after_ms(" 7 ", now), 7000);
    assert_int_equal(pd_retry_after_ms("99999999999999", now), 999999999LL * 1000);
    assert_int_equal(pd_retry_after_ms("Tue, 14 Nov 2023 22:13:50 GMT", now), 30000);
    assert_int_equal(pd_retry_after_ms("Tuesday, 14-Nov-23 22:14:20 GMT", now), 60000);
    assert_int_equal(pd_retry_after_ms("Tue Nov 14 22:13:25 2023", now), 5000);
    assert_int_equal(pd_retry_after_ms("Tue, 14 Nov 2023 22:00:00 GMT", now), 0); /* past */
    assert_int_equal(pd_retry_after_ms("soon", now), -1);
    assert_int_equal(pd_retry_after_ms("-5", now), -1);
}

static void heap_order(void **state)
{
    pd_heap h = {0};
    enum { N = 500 };
    pd_job *jobs = calloc(N, sizeof *jobs);
    pd_rng r;
    pd_rng_seed(&r, 7);
    for (int i = 0; i < N; i++) {
        jobs[i].due_ms = (int64_t)(pd_rng_next(&r) * 100000);
        assert_int_equal(pd_heap_push(&h, &jobs[i]), 0);
    }
    /* Take out every third from the middle. */
    for (int i = 0; i < N; i += 3)
        pd_heap_remove(&h, &jobs[i]);
    int64_t last = -1;
    size_t n = 0;
    pd_job *j;
    while ((j = pd_heap_pop(&h))) {
        assert_true(j->due_ms >= last);
        assert_true((j - jobs) % 3 != 0);
        last = j->due_ms;
        n++;
    }
    assert_int_equal(n, N - (N + 2) / 3);
    assert_null(pd_heap_peek(&h));
    pd_heap_free(&h);
    free(jobs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(backoff_bounds),    cmocka_unit_test(jitter_spread),
        cmocka_unit_test(retry_after_floor), cmocka_unit_test(retry_after_parse),
        cmocka_unit_test(heap_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
