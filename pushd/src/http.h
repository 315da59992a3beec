/* http — HTTP/2 POSTs over one libcurl multi handle, driven by pd_loop.
 *
 * libcurl does the protocol: TLS, ALPN h2, many streams multiplexed on one
 * connection per host (CURLMOPT_PIPELINING = CURLPIPE_MULTIPLEX, PIPEWAIT so
 * new requests wait for the connection rather than opening more, at most
 * `connections` per host). This file only hands curl its sockets and timer
 * (the multi_socket API on epoll), keeps easy handles for reuse, and
 * collects each answer: status, body (first 64 KB), the two headers pushd
 * reads (retry-after, apns-id), curl's error, time taken.
 *
 * A request is done exactly once: its callback runs with the result, from
 * the loop (never inside pd_http_post), or with PD_HTTP_ABORTED from
 * pd_http_free. */
#ifndef PD_HTTP_H
#define PD_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "loop.h"

typedef struct pd_http pd_http;

typedef struct pd_http_opts {
    const char *ca_file; /* NULL: the system's bundle */
    int connections;     /* per host */
    int max_streams;     /* per connection */
    long timeout_ms, connect_timeout_ms;
} pd_http_opts;

/* A finished request, as the callback sees it. */
typedef struct pd_http_res {
    long status;       /* HTTP status; 0 when there was no answer */
    CURLcode code;     /* CURLE_OK when an answer came */
    int aborted;       /* pd_http_free cut it short */
    const char *error; /* curl's message when code != CURLE_OK */
    const char *body;  /* NUL-terminated, body_len bytes */
    size_t body_len;
    const char *retry_after; /* header value or NULL */
    const char *apns_id;     /* header value or NULL */
    double seconds;          /* total time */
} pd_http_res;

typedef void (*pd_http_cb)(const pd_http_res *res, void *data);

pd_http *pd_http_new(pd_loop *loop, const pd_http_opts *o, char *err, size_t errlen);
/* Abort every request (callbacks run with aborted = 1), free everything. */
void pd_http_free(pd_http *h);

/* POST body[0..len) to url with headers. Takes ownership of headers and
 * body (freed when done, also on failure). 0, or -1 (the callback will not
 * run). */
int pd_http_post(pd_http *h, const char *url, struct curl_slist *headers, char *body, size_t len,
                 pd_http_cb cb, void *data);

size_t pd_http_inflight(const pd_http *h);

#endif
