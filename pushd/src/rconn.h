/* rconn — one asynchronous hiredis connection on pd_loop that keeps itself
 * up: connect (TCP or unix socket), AUTH / SELECT, then "up"; on any error
 * drop it and reconnect with exponential backoff and jitter, for ever.
 *
 * hiredis 0.14 has no command timeout, so a watchdog does it: when the
 * oldest unanswered command is older than its allowance (redis_timeout,
 * plus the BLOCK time for a blocking read) the connection is dropped, as
 * it is when a connect or handshake takes longer than redis_timeout.
 *
 * Replies arrive in command order. A command's callback runs exactly once:
 * with the reply, or with NULL when the connection was lost first (the
 * command may or may not have run). Commands are only accepted while the
 * connection is up; callers keep their work until it is. */
#ifndef PD_RCONN_H
#define PD_RCONN_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "config.h"
#include "loop.h"

typedef struct pd_rconn pd_rconn;

typedef void (*pd_rconn_reply_cb)(pd_rconn *c, redisReply *r, void *data);
typedef void (*pd_rconn_state_cb)(pd_rconn *c, int up, void *data);

/* name is for log lines ("reader", "writer"). Starts connecting at once. */
pd_rconn *pd_rconn_new(pd_loop *l, const pd_config *cfg, const char *name, pd_rconn_state_cb cb,
                       void *data);
/* Drop the connection (pending callbacks get NULL) and stop reconnecting. */
void pd_rconn_close(pd_rconn *c);
void pd_rconn_free(pd_rconn *c);

int pd_rconn_up(const pd_rconn *c);
size_t pd_rconn_pending(const pd_rconn *c);

/* Send one command (argv binary-safe; lens NULL: strlen). extra_ms adds to
 * the reply allowance (a blocking read's BLOCK). 0, or -1 if not up (cb
 * will not run). */
int pd_rconn_cmd(pd_rconn *c, int64_t extra_ms, pd_rconn_reply_cb cb, void *data, int argc,
                 const char **argv, const size_t *lens);

#endif
