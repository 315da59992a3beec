/* control_int — what the command files share: a command in progress, its
 * arguments, its answer, and the worker for long commands. */
#ifndef MQC_CONTROL_INT_H
#define MQC_CONTROL_INT_H

#include "broker.h"
#include "control.h"

#include <cjson/cJSON.h>
#include <stdint.h>

typedef struct ctl_req ctl_req;
typedef struct ctl_cmd ctl_cmd;

/* One command of a request. Its handler reads `in`, and answers by
 * filling `data` (an object, created on demand by ctl_data) or by
 * ctl_error(); the request's answer is sent when all its commands are
 * done. */
struct ctl_cmd {
    struct mqc *m;
    ctl_req *req;
    const cJSON *in; /* the command object (owned by the request) */
    cJSON *out;      /* its entry in the responses array */
    const char *admin;
    /* For a command run on the worker: its job and state. */
    void (*work)(ctl_cmd *cmd); /* worker thread: the store call only */
    void (*done)(ctl_cmd *cmd); /* main thread, after work: fill the answer */
    void *job;                  /* the command's own state: one malloc'ed block, freed by
                                   done (or at shutdown, if done never ran) */
    struct ctl_cmd *next;       /* on the worker's queue */
};

/* A handler returns CTL_DONE, or CTL_QUEUED after ctl_queue(). */
enum { CTL_DONE = 0, CTL_QUEUED = 1 };
typedef int (*ctl_fn)(ctl_cmd *cmd);

typedef struct ctl_def {
    const char *name;
    ctl_fn fn;
    const char *args; /* for docs and the unknown-argument check: "a,b,c" */
} ctl_def;

/* The command tables (one file per entity). */
extern const ctl_def ctl_conversation_cmds[];
extern const ctl_def ctl_user_cmds[];
extern const ctl_def ctl_ops_cmds[];

/* The answer. ctl_error returns CTL_DONE so handlers can `return ctl_error(...)`. */
cJSON *ctl_data(ctl_cmd *cmd);
int ctl_error(ctl_cmd *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A rule's refusal, with its code's name ("NOT_MEMBER: not a member ..."). */
int ctl_refused(ctl_cmd *cmd, const chat_status *st);
/* The store's error. */
int ctl_store_error(ctl_cmd *cmd, const char *what, mqstore_err e);

/* Arguments. Each returns 0, or -1 after ctl_error() naming the argument.
 * required 0: absent leaves *out as it is. */
int ctl_arg_id(ctl_cmd *cmd, const char *name, mqc_id_kind kind, int required, const char **out);
int ctl_arg_u64(ctl_cmd *cmd, const char *name, uint64_t max, int required, uint64_t *out);
int ctl_arg_i64(ctl_cmd *cmd, const char *name, int64_t min, int64_t max, int required,
                int64_t *out);
int ctl_arg_bool(ctl_cmd *cmd, const char *name, int required, int *out);
/* A string of at most max bytes (any UTF-8 cJSON accepted). */
int ctl_arg_str(ctl_cmd *cmd, const char *name, size_t max, int required, const char **out);
/* An array of 1..max ids of `kind`, distinct; *out is malloc'ed (the
 * strings are borrowed from the request). */
int ctl_arg_ids(ctl_cmd *cmd, const char *name, mqc_id_kind kind, size_t max, char ***out,
                size_t *n);

/* Run cmd->work on the worker thread, then cmd->done on the main thread. */
int ctl_queue(ctl_cmd *cmd);

/* The request's answer waits until the store write of `ticket` is durable
 * (like a device's reply). */
void ctl_after_ticket(ctl_cmd *cmd, uint64_t ticket);

/* A write an operator made: deliver its event to the members' devices. */
void ctl_deliver(ctl_cmd *cmd, chat_written *w);

/* Names used in answers. */
const char *ctl_role_name(mqstore_role r);
const char *ctl_code_name(wire_code code);

#endif
