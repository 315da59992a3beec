/* store_fx — the scaffolding the store's cmocka tests share
 * (tests/unit/test_store.c, test_large.c, test_store_ops.c,
 * test_store_fault.c; target mqchat_storefx).
 *
 * The idea: every test that touches a store gets a fixture `fx` through
 * fx_setup/fx_teardown: its own temporary directory (real RocksDB),
 * options with OS durability, and a fake clock (options.clock_ms reads
 * f->now, which starts at T0 and moves only by fx_advance), so retention
 * and time stamps are exercised without sleeping. The test opens the store
 * itself (fx_open) after it adjusted f->opt; the teardown closes it and
 * removes the directory even when the test failed.
 *
 *     #define T(fn) cmocka_unit_test_prestate_setup_teardown(fn, fx_setup, fx_teardown, \
 *                                                            "mqstore-mine-")
 *     static void test_x(void **state)
 *     {
 *         fx *f = *state;
 *         fx_open(f);
 *         EXPECT_OK(mqstore_conv_head(f->s, "c", &h));
 *     }
 *
 * The helpers here fail the running test (cmocka) on a wrong answer, so
 * they are for the test's own thread only; what a test file alone needs
 * (its own way to send or create a conversation) stays in that file. */
#ifndef MQCHAT_STORE_FX_H
#define MQCHAT_STORE_FX_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>

#include "mqstore.h"
#include "raw_db.h"
#include "testutil.h"

/* The fake clock's start (f->now after fx_setup), in ms. */
#define T0 INT64_C(1700000000000)
/* The kind of the tests' messages, and of their events (ev_make). */
#define MSG_KIND 1u
#define EV_KIND 42u
/* The device of ev_make's events. */
#define EV_DEVICE "dev-admin"

/* Fail the test unless expr returns want, printing both errors by name. */
#define EXPECT_ERR(expr, want)                                                                     \
    do {                                                                                           \
        mqstore_err e_ = (expr);                                                                   \
        mqstore_err w_ = (want);                                                                   \
        if (e_ != w_) {                                                                            \
            print_error("%s:%d: %s\n    got %s (%d), want %s (%d)\n", __FILE__, __LINE__, #expr,   \
                        mqstore_strerror(e_), (int)e_, mqstore_strerror(w_), (int)w_);             \
            _fail(__FILE__, __LINE__);                                                             \
        }                                                                                          \
    } while (0)
#define EXPECT_OK(expr) EXPECT_ERR(expr, MQSTORE_OK)

/* ---- the fixture ---------------------------------------------------------- */

typedef struct fx {
    char dir[64];        /* the store's temporary directory */
    mqstore_options opt; /* what fx_open passes; a test changes it first */
    mqstore *s;          /* NULL until fx_open */
    _Atomic int64_t now; /* the fake clock, ms */
    /* What fx_on_durable saw, for a test that sets it as opt.on_durable
     * (with on_durable_data = f): the largest ticket, how many calls, and
     * whether a ticket ever came below an earlier one. */
    _Atomic uint64_t cb_max;
    _Atomic unsigned cb_calls;
    _Atomic int cb_regress;
} fx;

/* cmocka setup: a new fixture in *state. *state on entry is the temporary
 * directory's prefix (cmocka's prestate; NULL: "mqstore-test-"). Returns 0,
 * or -1 when the fixture or its directory cannot be made. */
int fx_setup(void **state);

/* cmocka teardown: close the store if open, remove the directory, free the
 * fixture. Always returns 0. */
int fx_teardown(void **state);

/* The fake clock (options.clock_ms): f->now, with data the fixture. */
int64_t fx_clock(void *data);

/* An options.on_durable callback (data: the fixture) that records the
 * tickets it is called with in cb_max, cb_calls and cb_regress. */
void fx_on_durable(void *data, uint64_t ticket);

/* Open f->dir with f->opt into f->s, failing the test on an error. */
void fx_open(fx *f);

/* Close f->s (f->s is NULL afterwards); fx_reopen closes and opens again. */
void fx_close(fx *f);
void fx_reopen(fx *f);

/* Move the fake clock forward by ms. */
void fx_advance(fx *f, int64_t ms);

/* ---- stores and records ---------------------------------------------------- */

/* Open the store in dir with opt, failing the test on an error (the
 * message from mqstore_open printed). Never returns NULL. */
mqstore *store_open_ok(const char *dir, const mqstore_options *opt);

/* An event of kind EV_KIND from (actor, EV_DEVICE) with payload text and
 * mode (MQSTORE_MODE_KEEP: leave the conversation's mode as it is). */
mqstore_event ev_make(const char *actor, const char *text, mqstore_mode mode);

/* conv's head and user's inbox head (each fails the test on an error). */
uint64_t chead(fx *f, const char *conv);
uint64_t ihead(fx *f, const char *user);

/* The inbox_seq of user in a result's fan-out; 0 if absent. Fails the test
 * if the user is listed twice. */
uint64_t fanout_seq(const mqstore_result *r, const char *user);

/* ---- the closed store behind its back (raw_db.h) -------------------------- */

/* raw_open, failing the test on a RocksDB error. */
void raw_open_ok(raw_db *r, const char *dir);

/* Write one value (both given as literals, which may hold NUL bytes). */
#define RAW_PUT(r, cf, k, v) assert_null(raw_put((r), (cf), (k), sizeof(k) - 1, (v), sizeof(v) - 1))

/* No protobuf decodes this: a varint that never ends. */
#define GARBAGE "\xff\xff\xff\xff"

#endif
