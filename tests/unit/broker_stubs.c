/* broker_stubs — see broker_stubs.h. */
#include "broker_stubs.h"

#include <mosquitto.h>
#include <mosquitto_broker.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int stub_publish_rc = MOSQ_ERR_SUCCESS;

static stub_pub *pubs;
static size_t n_pubs, cap_pubs;
static stub_log *logs;
static size_t n_logs, cap_logs;

/* Grow *arr to hold one more element of `size` bytes; abort on OOM (a test
 * cannot go on without its record). */
static void *grow(void *arr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap) return arr;
    size_t c = *cap ? *cap * 2 : 16;
    void *p = realloc(arr, c * size);
    if (!p) abort();
    *cap = c;
    return p;
}

static char *dup_or_null(const char *s)
{
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

void *mosquitto_malloc(size_t size)
{
    return malloc(size);
}

void mosquitto_free(void *mem)
{
    free(mem);
}

int mosquitto_broker_publish(const char *clientid, const char *topic, int payloadlen, void *payload,
                             int qos, bool retain, mosquitto_property *properties)
{
    /* The broker's own argument checks: on MOSQ_ERR_INVAL it owns nothing. */
    if (!topic || payloadlen < 0 || (payloadlen > 0 && !payload) || qos < 0 || qos > 2)
        return MOSQ_ERR_INVAL;
    pubs = grow(pubs, &cap_pubs, n_pubs, sizeof(*pubs));
    stub_pub *p = &pubs[n_pubs++];
    p->client_id = dup_or_null(clientid);
    p->topic = dup_or_null(topic);
    p->len = (size_t)payloadlen;
    p->payload = malloc(p->len ? p->len : 1);
    if (!p->payload) abort();
    if (p->len) memcpy(p->payload, payload, p->len);
    p->qos = qos;
    p->retain = retain;
    p->properties = properties != NULL;
    if (stub_publish_rc != MOSQ_ERR_SUCCESS) return stub_publish_rc;
    free(payload); /* the broker's on success */
    return MOSQ_ERR_SUCCESS;
}

void mosquitto_log_printf(int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    logs = grow(logs, &cap_logs, n_logs, sizeof(*logs));
    logs[n_logs].level = level;
    logs[n_logs].line = dup_or_null(line);
    n_logs++;
}

size_t stub_pub_count(void)
{
    return n_pubs;
}

const stub_pub *stub_pub_get(size_t i)
{
    return i < n_pubs ? &pubs[i] : NULL;
}

size_t stub_log_count(void)
{
    return n_logs;
}

const stub_log *stub_log_get(size_t i)
{
    return i < n_logs ? &logs[i] : NULL;
}

void stub_reset(void)
{
    for (size_t i = 0; i < n_pubs; i++) {
        free(pubs[i].client_id);
        free(pubs[i].topic);
        free(pubs[i].payload);
    }
    for (size_t i = 0; i < n_logs; i++)
        free(logs[i].line);
    free(pubs);
    free(logs);
    pubs = NULL;
    logs = NULL;
    n_pubs = cap_pubs = n_logs = cap_logs = 0;
    stub_publish_rc = MOSQ_ERR_SUCCESS;
}
