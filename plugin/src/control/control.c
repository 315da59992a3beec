/* control — the $CONTROL/mqchat/v1 endpoint: decode a request, check the
 * admin, run each command from the tables of conversations.c, users.c and
 * ops.c, and send the answer once every command is done (control.h).
 *
 * A request lives until its last command is done: a command that runs on
 * the worker (ctl_queue) keeps it open, and the answer then goes out from
 * the main thread. The answer waits, like a device's reply, until every
 * store write the request made is durable (device/outq.c). Requests still
 * open at shutdown are freed unanswered.
 *
 * The worker is one thread with a FIFO of commands: each runs its `work`
 * (a blocking store call: checkpoint, compaction, resume, erasure) and
 * posts its `done` to the main thread (worker/wake.h). One at a time, so
 * two backups never race and the main thread never waits for one. */
#include "control_int.h"
#include "mqc_utf8.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Commands in one request; more is an error (the request is refused). */
#define CTL_MAX_COMMANDS 100

struct ctl_req {
    struct mqc *m;
    char *client_id;
    cJSON *in;        /* the parsed request */
    cJSON *responses; /* {"responses": [...]} */
    size_t pending;   /* commands not done yet */
    uint64_t ticket;  /* the newest write made for it */
    ctl_cmd *cmds;
    size_t n_cmds;
    ctl_req *prev, *next; /* open requests */
};

struct mqc_control {
    struct mqc *m;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    ctl_cmd *head, *tail; /* guarded by lock */
    int stop;             /* guarded by lock */
    ctl_req *open;        /* main thread */
};

/* ---- answers ---------------------------------------------------------- */

cJSON *ctl_data(ctl_cmd *cmd)
{
    cJSON *d = cJSON_GetObjectItemCaseSensitive(cmd->out, "data");
    if (!d) d = cJSON_AddObjectToObject(cmd->out, "data");
    return d;
}

int ctl_error(ctl_cmd *cmd, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cJSON_DeleteItemFromObjectCaseSensitive(cmd->out, "data");
    cJSON_DeleteItemFromObjectCaseSensitive(cmd->out, "error");
    cJSON_AddStringToObject(cmd->out, "error", msg);
    return CTL_DONE;
}

const char *ctl_code_name(wire_code code)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&mqchat__v1__error_code__descriptor, (int)code);
    /* "ERROR_CODE_NOT_MEMBER" -> "NOT_MEMBER" */
    return v ? v->name + strlen("ERROR_CODE_") : "INTERNAL";
}

int ctl_refused(ctl_cmd *cmd, const chat_status *st)
{
    return ctl_error(cmd, "%s: %s", ctl_code_name(st->code), st->msg);
}

int ctl_store_error(ctl_cmd *cmd, const char *what, mqstore_err e)
{
    return ctl_error(cmd, "%s: %s", what, mqstore_strerror(e));
}

const char *ctl_role_name(mqstore_role r)
{
    switch (r) {
    case MQSTORE_ROLE_OWNER:
        return "owner";
    case MQSTORE_ROLE_ADMIN:
        return "admin";
    case MQSTORE_ROLE_MEMBER:
        break;
    }
    return "member";
}

/* ---- arguments -------------------------------------------------------- */

/* The argument's item, or NULL: absent (fine unless required) or, with
 * *bad set, present but not of `type`. */
static const cJSON *arg(ctl_cmd *cmd, const char *name, int required, int (*is)(const cJSON *),
                        const char *type, int *bad)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cmd->in, name);
    *bad = 0;
    if (!v || cJSON_IsNull(v)) {
        if (required) {
            ctl_error(cmd, "missing argument '%s' (%s)", name, type);
            *bad = 1;
        }
        return NULL;
    }
    if (!is(v)) {
        ctl_error(cmd, "argument '%s' must be %s", name, type);
        *bad = 1;
        return NULL;
    }
    return v;
}

static int is_string(const cJSON *v)
{
    return cJSON_IsString(v) && v->valuestring;
}
static int is_number(const cJSON *v)
{
    return cJSON_IsNumber(v);
}
static int is_bool(const cJSON *v)
{
    return cJSON_IsBool(v);
}
static int is_array(const cJSON *v)
{
    return cJSON_IsArray(v);
}

static const char *kind_syntax(mqc_id_kind kind)
{
    switch (kind) {
    case MQC_ID_USER:
    case MQC_ID_DEVICE:
        return "1..128 of [A-Za-z0-9._-]";
    case MQC_ID_CONV:
        return "a conversation id (d:<a>:<b> or g:<1..64 of [A-Za-z0-9]>)";
    case MQC_ID_CLIENT:
    case MQC_ID_KEY:
        break;
    }
    return "1..128 of [A-Za-z0-9._:-]";
}

int ctl_arg_id(ctl_cmd *cmd, const char *name, mqc_id_kind kind, int required, const char **out)
{
    int bad;
    const cJSON *v = arg(cmd, name, required, is_string, "a string", &bad);
    if (bad) return -1;
    if (!v) return 0;
    if (!mqc_id_valid(kind, v->valuestring)) {
        ctl_error(cmd, "argument '%s' must be %s", name, kind_syntax(kind));
        return -1;
    }
    *out = v->valuestring;
    return 0;
}

int ctl_arg_str(ctl_cmd *cmd, const char *name, size_t max, int required, const char **out)
{
    int bad;
    const cJSON *v = arg(cmd, name, required, is_string, "a string", &bad);
    if (bad) return -1;
    if (!v) return 0;
    if (strlen(v->valuestring) > max) {
        ctl_error(cmd, "argument '%s' is longer than %zu bytes", name, max);
        return -1;
    }
    *out = v->valuestring;
    return 0;
}

/* An integral JSON number in [min, max]; doubles hold integers exactly up
 * to 2^53, so larger bounds are refused as imprecise. */
static int integral(ctl_cmd *cmd, const char *name, double min, double max, int required,
                    double *out)
{
    int bad;
    const cJSON *v = arg(cmd, name, required, is_number, "a number", &bad);
    if (bad) return -1;
    if (!v) return 1;
    double x = v->valuedouble;
    if (!(x >= min && x <= max) || x != (double)(long long)x || x > 9007199254740992.0 ||
        x < -9007199254740992.0) {
        ctl_error(cmd, "argument '%s' must be an integer in %.0f..%.0f", name, min, max);
        return -1;
    }
    *out = x;
    return 0;
}

int ctl_arg_u64(ctl_cmd *cmd, const char *name, uint64_t max, int required, uint64_t *out)
{
    double x;
    int rc = integral(cmd, name, 0, (double)max, required, &x);
    if (rc == 0) *out = (uint64_t)x;
    return rc < 0 ? -1 : 0;
}

int ctl_arg_i64(ctl_cmd *cmd, const char *name, int64_t min, int64_t max, int required,
                int64_t *out)
{
    double x;
    int rc = integral(cmd, name, (double)min, (double)max, required, &x);
    if (rc == 0) *out = (int64_t)x;
    return rc < 0 ? -1 : 0;
}

int ctl_arg_bool(ctl_cmd *cmd, const char *name, int required, int *out)
{
    int bad;
    const cJSON *v = arg(cmd, name, required, is_bool, "true or false", &bad);
    if (bad) return -1;
    if (v) *out = cJSON_IsTrue(v);
    return 0;
}

int ctl_arg_ids(ctl_cmd *cmd, const char *name, mqc_id_kind kind, size_t max, char ***out,
                size_t *n)
{
    int bad;
    const cJSON *v = arg(cmd, name, 1, is_array, "an array of strings", &bad);
    if (bad) return -1;
    size_t count = (size_t)cJSON_GetArraySize(v);
    if (count < 1 || count > max) {
        ctl_error(cmd, "argument '%s' must hold 1..%zu ids", name, max);
        return -1;
    }
    char **ids = calloc(count, sizeof(*ids));
    if (!ids) {
        ctl_error(cmd, "out of memory");
        return -1;
    }
    size_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, v)
    {
        if (!is_string(it) || !mqc_id_valid(kind, it->valuestring)) {
            free(ids);
            ctl_error(cmd, "argument '%s': item %zu must be %s", name, i, kind_syntax(kind));
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(ids[j], it->valuestring) == 0) {
                free(ids);
                ctl_error(cmd, "argument '%s': '%s' is listed twice", name, it->valuestring);
                return -1;
            }
        ids[i++] = it->valuestring;
    }
    *out = ids;
    *n = count;
    return 0;
}

/* Every key of the command object is "command", "correlationData" or one
 * of the command's arguments: a typo must not silently mean "absent". */
static int check_keys(ctl_cmd *cmd, const ctl_def *def)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, cmd->in)
    {
        const char *k = it->string;
        if (strcmp(k, "command") == 0 || strcmp(k, "correlationData") == 0) continue;
        size_t kl = strlen(k);
        const char *p = def->args;
        int known = 0;
        while (p && *p && !known) {
            const char *e = strchr(p, ',');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            known = n == kl && strncmp(p, k, n) == 0;
            p = e ? e + 1 : NULL;
        }
        if (!known) {
            ctl_error(cmd, "unknown argument '%s' for %s (arguments: %s)", k, def->name,
                      def->args[0] ? def->args : "none");
            return -1;
        }
    }
    return 0;
}

/* ---- requests --------------------------------------------------------- */

static const ctl_def *find_cmd(const char *name)
{
    const ctl_def *tables[] = {ctl_conversation_cmds, ctl_user_cmds, ctl_ops_cmds};
    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++)
        for (const ctl_def *d = tables[t]; d->name; d++)
            if (strcmp(d->name, name) == 0) return d;
    return NULL;
}

static void req_free(ctl_req *r)
{
    mqc_control *ctl = r->m->control;
    if (r->prev) r->prev->next = r->next;
    if (r->next) r->next->prev = r->prev;
    if (ctl->open == r) ctl->open = r->next;
    cJSON_Delete(r->in);
    cJSON_Delete(r->responses);
    free(r->cmds);
    free(r->client_id);
    free(r);
}

/* Every command is done: the answer, after the request's writes are durable. */
static void req_answer(ctl_req *r)
{
    assert(r->pending == 0);
    char *json = cJSON_PrintUnformatted(r->responses);
    pubs out = {0};
    if (!json ||
        pubs_add_raw(&out, r->client_id, MQC_CONTROL_RESPONSE_TOPIC, json, strlen(json), 1))
        mosquitto_log_printf(MOSQ_LOG_ERR, "mqchat: out of memory answering a control request");
    cJSON_free(json);
    out_after(&r->m->dev, r->ticket, &out);
    req_free(r);
}

/* One command (or the dispatch loop's hold) less; the last one answers. */
static void req_release(ctl_req *r)
{
    assert(r->pending > 0);
    if (--r->pending == 0) req_answer(r);
}

void ctl_after_ticket(ctl_cmd *cmd, uint64_t ticket)
{
    if (ticket > cmd->req->ticket) cmd->req->ticket = ticket;
}

void ctl_deliver(ctl_cmd *cmd, chat_written *w)
{
    deliver_written(&cmd->m->dev, w);
    ctl_after_ticket(cmd, w->r.ticket);
}

/* A request that could not even be read: one error response. */
static void answer_malformed(struct mqc *m, const char *client_id, const char *why)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "responses");
    cJSON *one = cJSON_CreateObject();
    cJSON_AddItemToArray(arr, one);
    cJSON_AddStringToObject(one, "command", "");
    cJSON_AddStringToObject(one, "error", why);
    char *json = cJSON_PrintUnformatted(root);
    pubs out = {0};
    if (json) pubs_add_raw(&out, client_id, MQC_CONTROL_RESPONSE_TOPIC, json, strlen(json), 1);
    cJSON_free(json);
    cJSON_Delete(root);
    out_after(&m->dev, 0, &out);
}

int mqc_control_on_event(int event, void *event_data, void *userdata)
{
    struct mqc *m = userdata;
    struct mosquitto_evt_control *ev = event_data;
    (void)event;
    const char *client_id = mosquitto_client_id(ev->client);
    const char *user = mosquitto_client_username(ev->client);
    if (!client_id) return MOSQ_ERR_SUCCESS;
    /* broker/acl.c lets only admins publish here; checked again per
     * request (a reply says so instead of silence). */
    if (!mqc_config_is_admin(&m->cfg, user)) {
        mosquitto_log_printf(MOSQ_LOG_NOTICE,
                             "mqchat: control command from %s refused: not in "
                             "admin_users",
                             user ? user : "(no username)");
        answer_malformed(m, client_id, "not authorized: the username is not in admin_users");
        return MOSQ_ERR_SUCCESS;
    }
    if (ev->payloadlen > m->cfg.control_max_bytes) {
        char why[120];
        snprintf(why, sizeof(why), "request of %u bytes is over control_max_bytes (%zu)",
                 ev->payloadlen, m->cfg.control_max_bytes);
        answer_malformed(m, client_id, why);
        return MOSQ_ERR_SUCCESS;
    }
    if (!mqc_utf8_valid(ev->payload, ev->payloadlen)) {
        answer_malformed(m, client_id, "not UTF-8 (JSON text is UTF-8)");
        return MOSQ_ERR_SUCCESS;
    }
    cJSON *in = cJSON_ParseWithLength((const char *)ev->payload, ev->payloadlen);
    const cJSON *cmds = in ? cJSON_GetObjectItemCaseSensitive(in, "commands") : NULL;
    int n = cmds && cJSON_IsArray(cmds) ? cJSON_GetArraySize(cmds) : -1;
    if (!in || n < 1 || n > CTL_MAX_COMMANDS) {
        cJSON_Delete(in);
        answer_malformed(m, client_id,
                         !in ? "not JSON"
                             : "expected {\"commands\":[...]} with 1..100 command objects");
        return MOSQ_ERR_SUCCESS;
    }
    ctl_req *r = calloc(1, sizeof(*r));
    if (r) {
        r->cmds = calloc((size_t)n, sizeof(*r->cmds));
        r->client_id = strdup(client_id);
        r->responses = cJSON_CreateObject();
    }
    cJSON *arr = r && r->responses ? cJSON_AddArrayToObject(r->responses, "responses") : NULL;
    if (!r || !r->cmds || !r->client_id || !arr) {
        if (r) {
            cJSON_Delete(r->responses);
            free(r->cmds);
            free(r->client_id);
            free(r);
        }
        cJSON_Delete(in);
        mosquitto_log_printf(MOSQ_LOG_ERR, "mqchat: out of memory for a control request");
        return MOSQ_ERR_SUCCESS;
    }
    r->m = m;
    r->in = in;
    r->n_cmds = (size_t)n;
    r->pending = (size_t)n + 1; /* +1: held while the loop below runs */
    r->next = m->control->open;
    if (r->next) r->next->prev = r;
    m->control->open = r;

    size_t i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cmds)
    {
        ctl_cmd *cmd = &r->cmds[i++];
        cmd->m = m;
        cmd->req = r;
        cmd->in = c;
        cmd->admin = user;
        cmd->out = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, cmd->out);
        const cJSON *name =
            cJSON_IsObject(c) ? cJSON_GetObjectItemCaseSensitive(c, "command") : NULL;
        const cJSON *corr =
            cJSON_IsObject(c) ? cJSON_GetObjectItemCaseSensitive(c, "correlationData") : NULL;
        cJSON_AddStringToObject(cmd->out, "command", is_string(name) ? name->valuestring : "");
        if (corr) cJSON_AddItemToObject(cmd->out, "correlationData", cJSON_Duplicate(corr, 1));
        const ctl_def *def = is_string(name) ? find_cmd(name->valuestring) : NULL;
        int rc = CTL_DONE;
        if (!cJSON_IsObject(c))
            ctl_error(cmd, "a command must be an object");
        else if (!is_string(name))
            ctl_error(cmd, "a command needs \"command\": \"<name>\"");
        else if (!def)
            ctl_error(cmd, "unknown command '%.64s'", name->valuestring);
        else if (!check_keys(cmd, def)) {
            mosquitto_log_printf(MOSQ_LOG_INFO, "mqchat: control: %s by %s", def->name, user);
            rc = def->fn(cmd);
        }
        if (rc == CTL_DONE) req_release(r);
    }
    req_release(r); /* the loop's hold: answers now unless a command is queued */
    return MOSQ_ERR_SUCCESS;
}

/* ---- the worker ------------------------------------------------------- */

static void cmd_done_main(void *data)
{
    ctl_cmd *cmd = data;
    cmd->done(cmd);
    req_release(cmd->req);
}

static void *worker(void *data)
{
    mqc_control *ctl = data;
    pthread_mutex_lock(&ctl->lock);
    for (;;) {
        while (!ctl->head && !ctl->stop)
            pthread_cond_wait(&ctl->cond, &ctl->lock);
        if (ctl->stop) break;
        ctl_cmd *cmd = ctl->head;
        ctl->head = cmd->next;
        if (!ctl->head) ctl->tail = NULL;
        pthread_mutex_unlock(&ctl->lock);
        cmd->work(cmd);
        /* Out of memory here would strand the request; it is freed,
         * unanswered, at shutdown. */
        if (mqc_wake_post(ctl->m->wake, cmd_done_main, cmd) != 0)
            fprintf(stderr, "mqchat: control: cannot hand a finished command back\n");
        pthread_mutex_lock(&ctl->lock);
    }
    pthread_mutex_unlock(&ctl->lock);
    return NULL;
}

int ctl_queue(ctl_cmd *cmd)
{
    mqc_control *ctl = cmd->m->control;
    assert(cmd->work && cmd->done);
    pthread_mutex_lock(&ctl->lock);
    cmd->next = NULL;
    if (ctl->tail)
        ctl->tail->next = cmd;
    else
        ctl->head = cmd;
    ctl->tail = cmd;
    pthread_cond_signal(&ctl->cond);
    pthread_mutex_unlock(&ctl->lock);
    return CTL_QUEUED;
}

mqc_control *mqc_control_new(struct mqc *m, char *err, size_t errlen)
{
    mqc_control *ctl = calloc(1, sizeof(*ctl));
    if (!ctl) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ctl->m = m;
    pthread_mutex_init(&ctl->lock, NULL);
    pthread_cond_init(&ctl->cond, NULL);
    int e = mqc_thread_start(&ctl->thread, worker, ctl);
    if (e) {
        snprintf(err, errlen, "cannot start the control thread: %s", strerror(e));
        pthread_mutex_destroy(&ctl->lock);
        pthread_cond_destroy(&ctl->cond);
        free(ctl);
        return NULL;
    }
    return ctl;
}

void mqc_control_free(mqc_control *ctl)
{
    if (!ctl) return;
    pthread_mutex_lock(&ctl->lock);
    ctl->stop = 1;
    pthread_cond_signal(&ctl->cond);
    pthread_mutex_unlock(&ctl->lock);
    pthread_join(ctl->thread, NULL);
    /* Queued commands never ran; posted ones are dropped with the wake
     * facility. Their jobs are freed with their requests. */
    for (ctl_req *r = ctl->open; r; r = ctl->open) {
        for (size_t i = 0; i < r->n_cmds; i++)
            free(r->cmds[i].job);
        ctl->open = r->next;
        if (ctl->open) ctl->open->prev = NULL;
        r->next = r->prev = NULL;
        cJSON_Delete(r->in);
        cJSON_Delete(r->responses);
        free(r->cmds);
        free(r->client_id);
        free(r);
    }
    pthread_mutex_destroy(&ctl->lock);
    pthread_cond_destroy(&ctl->cond);
    free(ctl);
}
