/* http — see http.h.
 *
 * INVARIANT: a req is either on the free list (easy handle idle, no
 * callback) or attached to the multi handle and counted in `inflight`. */
#include "http.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BODY_MAX (64 * 1024)
#define FREE_MAX 4096 /* idle easy handles kept */

typedef struct req {
    CURL *easy;
    pd_http *h;
    struct curl_slist *headers;
    char *post;
    char *body;
    size_t body_len, body_cap;
    char retry_after[80], apns_id[64];
    int has_retry_after, has_apns_id;
    pd_http_cb cb;
    void *data;
    char errbuf[CURL_ERROR_SIZE];
    struct req *next;          /* free list */
    struct req *anext, *aprev; /* attached list */
} req;

struct pd_http {
    pd_loop *loop;
    CURLM *multi;
    pd_timer timer;
    pd_http_opts o;
    char *ca_file;
    req *free_list;
    req *attached; /* requests on the multi handle */
    size_t nfree, inflight;
    int in_check; /* reentrancy guard for check_done */
    int closing;  /* pd_http_free is running: no new requests */
};

static void check_done(pd_http *h);

static size_t on_body(char *p, size_t size, size_t n, void *data)
{
    req *r = data;
    size_t len = size * n, keep = len;
    if (r->body_len + keep > BODY_MAX) keep = BODY_MAX - r->body_len;
    if (keep) {
        if (r->body_len + keep + 1 > r->body_cap) {
            size_t cap = (r->body_len + keep + 1) * 2;
            char *b = realloc(r->body, cap);
            if (!b) return 0; /* curl fails the transfer: CURLE_WRITE_ERROR */
            r->body = b;
            r->body_cap = cap;
        }
        memcpy(r->body + r->body_len, p, keep);
        r->body_len += keep;
        r->body[r->body_len] = '\0';
    }
    return len;
}

/* "name: value\r\n" -> value into out if name matches. */
static int header_value(const char *line, size_t len, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl) != 0) return 0;
    const char *v = line + nl + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    size_t n = (size_t)(end - v) < cap - 1 ? (size_t)(end - v) : cap - 1;
    memcpy(out, v, n);
    out[n] = '\0';
    return 1;
}

static size_t on_header(char *p, size_t size, size_t n, void *data)
{
    req *r = data;
    size_t len = size * n;
    if (header_value(p, len, "retry-after", r->retry_after, sizeof r->retry_after))
        r->has_retry_after = 1;
    else if (header_value(p, len, "apns-id", r->apns_id, sizeof r->apns_id))
        r->has_apns_id = 1;
    return len;
}

static void on_fd(pd_loop *l, int fd, int events, void *data)
{
    pd_http *h = data;
    int running;
    int ev = (events & PD_READ ? CURL_CSELECT_IN : 0) | (events & PD_WRITE ? CURL_CSELECT_OUT : 0);
    curl_multi_socket_action(h->multi, fd, ev, &running);
    check_done(h);
}

static int sock_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    pd_http *h = userp;
    if (what == CURL_POLL_REMOVE) {
        pd_loop_unwatch(h->loop, s);
        return 0;
    }
    int ev = (what & CURL_POLL_IN ? PD_READ : 0) | (what & CURL_POLL_OUT ? PD_WRITE : 0);
    return pd_loop_watch(h->loop, s, ev, on_fd, h) == 0 ? 0 : -1;
}

static void on_timer(pd_loop *l, void *data)
{
    pd_http *h = data;
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

static int timer_cb(CURLM *m, long ms, void *userp)
{
    pd_http *h = userp;
    if (ms < 0)
        pd_timer_cancel(h->loop, &h->timer);
    else
        pd_timer_start(h->loop, &h->timer, ms, on_timer, h);
    return 0;
}

pd_http *pd_http_new(pd_loop *loop, const pd_http_opts *o, char *err, size_t errlen)
{
    curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    if (!(v->features & CURL_VERSION_HTTP2)) {
        snprintf(err, errlen, "libcurl %s has no HTTP/2 support", v->version);
        return NULL;
    }
    pd_http *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->loop = loop;
    h->o = *o;
    if (o->ca_file && !(h->ca_file = strdup(o->ca_file))) {
        free(h);
        return NULL;
    }
    h->o.ca_file = h->ca_file;
    h->multi = curl_multi_init();
    if (!h->multi) {
        free(h->ca_file);
        free(h);
        snprintf(err, errlen, "curl_multi_init failed");
        return NULL;
    }
    curl_multi_setopt(h->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)o->connections);
    curl_multi_setopt(h->multi, CURLMOPT_MAX_CONCURRENT_STREAMS, (long)o->max_streams);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    return h;
}

static req *req_new(pd_http *h)
{
    req *r = h->free_list;
    if (r) {
        h->free_list = r->next;
        h->nfree--;
        return r;
    }
    r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->easy = curl_easy_init();
    if (!r->easy) {
        free(r);
        return NULL;
    }
    r->h = h;
    CURL *e = r->easy;
    /* Options that never change for this handle. */
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 15L);
    curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, 600L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, h->o.timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, h->o.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "mqchat-pushd/0.1");
    if (h->o.ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, h->o.ca_file);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    return r;
}

static void req_release(pd_http *h, req *r)
{
    curl_slist_free_all(r->headers);
    free(r->post);
    r->headers = NULL;
    r->post = NULL;
    r->body_len = 0;
    if (r->body) r->body[0] = '\0';
    r->has_retry_after = r->has_apns_id = 0;
    r->cb = NULL;
    r->data = NULL;
    r->errbuf[0] = '\0';
    if (h->nfree < FREE_MAX) {
        if (r->body_cap > 4096) { /* do not keep big buffers around */
            free(r->body);
            r->body = NULL;
            r->body_cap = 0;
        }
        r->next = h->free_list;
        h->free_list = r;
        h->nfree++;
    } else {
        curl_easy_cleanup(r->easy);
        free(r->body);
        free(r);
    }
}

int pd_http_post(pd_http *h, const char *url, struct curl_slist *headers, char *body, size_t len,
                 pd_http_cb cb, void *data)
{
    assert(cb);
    req *r = h->closing ? NULL : req_new(h);
    if (!r) {
        curl_slist_free_all(headers);
        free(body);
        return -1;
    }
    r->headers = headers;
    r->post = body;
    r->cb = cb;
    r->data = data;
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
        req_release(h, r);
        return -1;
    }
    h->inflight++;
    r->aprev = NULL;
    r->anext = h->attached;
    if (h->attached) h->attached->aprev = r;
    h->attached = r;
    return 0;
}

static void finish(pd_http *h, req *r, CURLcode code, int aborted)
{
    pd_http_res res = {0};
    long status = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME, &res.seconds);
    res.code = code;
    res.aborted = aborted;
    res.status = code == CURLE_OK ? status : 0;
    res.error = code == CURLE_OK ? NULL : r->errbuf[0] ? r->errbuf : curl_easy_strerror(code);
    res.body = r->body ? r->body : "";
    res.body_len = r->body_len;
    res.retry_after = r->has_retry_after ? r->retry_after : NULL;
    res.apns_id = r->has_apns_id ? r->apns_id : NULL;
    curl_multi_remove_handle(h->multi, r->easy);
    if (r->aprev)
        r->aprev->anext = r->anext;
    else
        h->attached = r->anext;
    if (r->anext) r->anext->aprev = r->aprev;
    assert(h->inflight > 0);
    h->inflight--;
    pd_http_cb cb = r->cb;
    void *data = r->data;
    cb(&res, data);
    req_release(h, r);
}

static void check_done(pd_http *h)
{
    if (h->in_check) return;
    h->in_check = 1;
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        req *r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        assert(r && r->easy == m->easy_handle);
        finish(h, r, m->data.result, 0);
    }
    h->in_check = 0;
}

size_t pd_http_inflight(const pd_http *h)
{
    return h->inflight;
}

void pd_http_free(pd_http *h)
{
    if (!h) return;
    h->closing = 1;
    /* Abort what is still attached. */
    while (h->attached)
        finish(h, h->attached, CURLE_ABORTED_BY_CALLBACK, 1);
    assert(h->inflight == 0);
    pd_timer_cancel(h->loop, &h->timer);
    for (req *r = h->free_list, *n; r; r = n) {
        n = r->next;
        curl_easy_cleanup(r->easy);
        free(r->body);
        free(r);
    }
    curl_multi_cleanup(h->multi);
    free(h->ca_file);
    free(h);
}
