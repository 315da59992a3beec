/* httpd — the metrics endpoint (httpd.h): a libmicrohttpd daemon with its
 * own polling thread.
 *
 * We open the listening socket ourselves (so that a bad address or a port
 * in use is reported with its errno) and hand it to MHD. MHD starts its
 * thread inside MHD_start_daemon; every signal is blocked around that
 * call, so the thread inherits a full mask and the wake facility's signal
 * (worker/wake.h) can only ever land on the main thread, where it
 * interrupts epoll_wait. Each request copies the snapshot under its mutex
 * (metrics.h) and renders it on this thread. */
#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct mqc_metrics_http {
    struct MHD_Daemon *daemon;
    mqc_metrics *metrics;
    int port;
};

static enum MHD_Result answer(struct MHD_Connection *conn, unsigned status, char *body, size_t len,
                              const char *type)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, body, body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result answer_text(struct MHD_Connection *conn, unsigned status, const char *text)
{
    char *body = strdup(text);
    if (!body) return MHD_NO;
    return answer(conn, status, body, strlen(body), "text/plain; charset=utf-8");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    mqc_metrics_http *h = cls;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    if (strcmp(url, "/metrics") != 0) return answer_text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return answer_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET\n");
    mqc_snapshot *s = malloc(sizeof(*s));
    if (!s) return MHD_NO;
    mqc_metrics_get(h->metrics, s);
    size_t len = mqc_metrics_text(s, NULL, 0);
    char *body = malloc(len + 1);
    if (body) mqc_metrics_text(s, body, len + 1);
    free(s);
    if (!body) return MHD_NO;
    return answer(conn, MHD_HTTP_OK, body, len, CONTENT_TYPE);
}

/* A listening TCP socket on addr:port, non-blocking; -1 with err set. */
static int listen_on(const char *addr, int port, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t sl;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, addr, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        sl = sizeof(*v4);
    } else if (inet_pton(AF_INET6, addr, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        sl = sizeof(*v6);
    } else {
        snprintf(err, errlen, "metrics_http_bind '%s' is not an IPv4 or IPv6 address", addr);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        (ss.ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one))) ||
        bind(fd, (struct sockaddr *)&ss, sl) || listen(fd, 16)) {
        snprintf(err, errlen, "metrics HTTP server cannot listen on %s port %d: %s", addr, port,
                 strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    return fd;
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl)) return -1;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

mqc_metrics_http *mqc_metrics_http_start(mqc_metrics *metrics, const char *bind, int port,
                                         char *err, size_t errlen)
{
    if (port < 0 || port > 65535) {
        snprintf(err, errlen, "metrics HTTP port %d is not in 0..65535", port);
        return NULL;
    }
    mqc_metrics_http *h = calloc(1, sizeof(*h));
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->metrics = metrics;
    int fd = listen_on(bind, port, err, errlen);
    if (fd < 0) {
        free(h);
        return NULL;
    }
    h->port = bound_port(fd);
    /* MHD starts its thread in here: with every signal blocked it keeps
     * that mask for life (worker/wake.h). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    h->daemon = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD, 0, NULL, NULL, on_request, h,
                                 MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
                                 (unsigned)MQC_HTTP_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
                                 (unsigned)MQC_HTTP_TIMEOUT_S, MHD_OPTION_END);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!h->daemon) {
        snprintf(err, errlen, "metrics HTTP server on %s port %d did not start", bind, h->port);
        close(fd);
        free(h);
        return NULL;
    }
    return h;
}

int mqc_metrics_http_port(const mqc_metrics_http *h)
{
    return h->port;
}

void mqc_metrics_http_stop(mqc_metrics_http *h)
{
    if (!h) return;
    MHD_stop_daemon(h->daemon); /* joins the thread, closes the listening socket */
    free(h);
}
