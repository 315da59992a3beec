/* store_fx — the store tests' fixture (a temporary directory, options, the
 * store handle and a fake clock) and the small helpers they share. See
 * store_fx.h. */
#include "store_fx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fx_setup(void **state)
{
    const char *prefix = *state != NULL ? *state : "mqstore-test-";
    fx *f = calloc(1, sizeof *f);
    if (f == NULL) return -1;
    if (tu_mkdtemp(f->dir, sizeof f->dir, NULL, prefix) != 0) {
        free(f);
        return -1;
    }
    mqstore_options_init(&f->opt);
    f->opt.durability = MQSTORE_DURABILITY_OS;
    f->opt.clock_ms = fx_clock;
    f->opt.clock_data = f;
    atomic_store(&f->now, T0);
    *state = f;
    return 0;
}

int fx_teardown(void **state)
{
    fx *f = *state;
    if (f != NULL) {
        if (f->s != NULL) mqstore_free(f->s);
        tu_rm_rf(f->dir);
        free(f);
    }
    *state = NULL;
    return 0;
}

int64_t fx_clock(void *data)
{
    return atomic_load(&((fx *)data)->now);
}

/* Called on the store's threads: atomics only, no cmocka assertion. */
void fx_on_durable(void *data, uint64_t ticket)
{
    fx *f = data;
    uint64_t prev = atomic_load(&f->cb_max);
    if (ticket < prev) atomic_store(&f->cb_regress, 1);
    while (prev < ticket && !atomic_compare_exchange_weak(&f->cb_max, &prev, ticket)) {
    }
    atomic_fetch_add(&f->cb_calls, 1);
}

void fx_open(fx *f)
{
    f->s = NULL; /* a failed open leaves nothing for the teardown */
    f->s = store_open_ok(f->dir, &f->opt);
}

void fx_close(fx *f)
{
    mqstore_free(f->s);
    f->s = NULL;
}

void fx_reopen(fx *f)
{
    fx_close(f);
    fx_open(f);
}

void fx_advance(fx *f, int64_t ms)
{
    atomic_fetch_add(&f->now, ms);
}

mqstore *store_open_ok(const char *dir, const mqstore_options *opt)
{
    mqstore *s = NULL;
    char *msg = NULL;
    mqstore_err e = mqstore_open(dir, opt, &s, &msg);
    if (e != MQSTORE_OK) {
        print_error("mqstore_open(%s): %s: %s\n", dir, mqstore_strerror(e),
                    msg ? msg : "(no message)");
        free(msg);
        fail();
    }
    free(msg);
    assert_non_null(s);
    return s;
}

mqstore_event ev_make(const char *actor, const char *text, mqstore_mode mode)
{
    mqstore_event ev = {
        .actor_user = actor,
        .actor_device = EV_DEVICE,
        .kind = EV_KIND,
        .payload = text,
        .payload_len = strlen(text),
        .mode = mode,
    };
    return ev;
}

uint64_t chead(fx *f, const char *conv)
{
    uint64_t h = 12345;
    EXPECT_OK(mqstore_conv_head(f->s, conv, &h));
    return h;
}

uint64_t ihead(fx *f, const char *user)
{
    uint64_t h = 12345;
    EXPECT_OK(mqstore_inbox_head(f->s, user, &h));
    return h;
}

uint64_t fanout_seq(const mqstore_result *r, const char *user)
{
    uint64_t found = 0;
    int hits = 0;
    for (size_t i = 0; i < r->n_fanout; i++) {
        if (strcmp(r->fanout_user[i], user) == 0) {
            found = r->fanout_inbox_seq[i];
            hits++;
        }
    }
    assert_true(hits <= 1);
    return found;
}

void raw_open_ok(raw_db *r, const char *dir)
{
    char *err = raw_open(r, dir);
    if (err) print_error("rocksdb open %s: %s\n", dir, err);
    assert_null(err);
}
