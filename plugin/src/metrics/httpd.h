/* httpd — GET /metrics for Prometheus, on a libmicrohttpd thread.
 *
 * The server answers GET (and HEAD) /metrics with the text exposition of
 * the snapshot the main thread last copied into `metrics` (metrics.h),
 * 404 for every other path and 405 for other methods. It holds at most
 * MQC_HTTP_CONNECTIONS connections, drops one idle for MQC_HTTP_TIMEOUT_S,
 * and listens on one address (loopback by default: the figures are for
 * the operator, not for devices).
 *
 * It never calls the broker and reads nothing but the snapshot, under its
 * mutex. Its thread is started with every signal blocked, like
 * mqc_thread_start (worker/wake.h): the wake facility's signal must only
 * reach the main thread.
 *
 * Threads: mqc_metrics_http_start/stop/port on the main thread. */
#ifndef MQC_METRICS_HTTPD_H
#define MQC_METRICS_HTTPD_H

#include <stddef.h>

#include "metrics.h"

#define MQC_HTTP_CONNECTIONS 8
#define MQC_HTTP_TIMEOUT_S 10

typedef struct mqc_metrics_http mqc_metrics_http;

/* Listen on bind (an IPv4 or IPv6 address literal) and port (0: any free
 * port, see mqc_metrics_http_port) and serve metrics. NULL on failure,
 * with the reason in err. */
mqc_metrics_http *mqc_metrics_http_start(mqc_metrics *metrics, const char *bind, int port,
                                         char *err, size_t errlen);
/* The port it listens on. */
int mqc_metrics_http_port(const mqc_metrics_http *h);
/* Stop the thread (requests being answered finish first), close the
 * socket, free. NULL is a no-op. */
void mqc_metrics_http_stop(mqc_metrics_http *h);

#endif
