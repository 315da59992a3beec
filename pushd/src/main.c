/* pushd — the push daemon's entry point: options, configuration, signals,
 * and the loop. See README.md (the manual) and docs/PUSH.md.
 *
 * Exit status: 0 after SIGTERM/SIGINT (in-flight requests finished or the
 * shutdown_timeout passed; unfinished jobs stay pending for a claim),
 * 1 on a runtime failure that stops the daemon, 2 on a bad command line or
 * configuration (one line on stderr names the key). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <curl/curl.h>

#include "apns.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "loop.h"
#include "oauth.h"
#include "pushd.h"
#include "stats.h"

#define DEFAULT_CONFIG "/etc/mqchat/pushd.conf"
#define PUSHD_VERSION "0.1.0"

typedef struct app {
    pd_loop *loop;
    pd_config cfg;
    pd_core *core;
    pd_timer stats_timer;
    int sigfd;
    int stop_signals;
} app;

static void usage(FILE *f)
{
    fprintf(f, "usage: pushd [-c FILE] [-t] [-h] [-V]\n"
               "  -c FILE  configuration file (default " DEFAULT_CONFIG ")\n"
               "  -t       check the configuration (and the key files) and exit\n"
               "  -h       this help\n"
               "  -V       version\n");
}

static void write_stats(app *a)
{
    if (!a->cfg.stats_file) return;
    pd_core_gauges(a->core);
    if (pd_stats_write(&pd_stat, a->cfg.stats_file) != 0)
        pd_warn("stats: cannot write %s: %s", a->cfg.stats_file, strerror(errno));
}

static void on_stats(pd_loop *l, void *data)
{
    app *a = data;
    write_stats(a);
    pd_timer_start(l, &a->stats_timer, a->cfg.stats_interval_ms, on_stats, a);
}

static void on_signal(pd_loop *l, int fd, int events, void *data)
{
    app *a = data;
    struct signalfd_siginfo si;
    while (read(fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP) {
            if (pd_log_reopen() != 0)
                pd_err("SIGHUP: cannot reopen %s: %s", a->cfg.log_file, strerror(errno));
            else
                pd_info("SIGHUP: log reopened");
            continue;
        }
        a->stop_signals++;
        int64_t now = pd_now_ms();
        if (a->stop_signals == 1) {
            pd_info("%s: stopping", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
            pd_core_stop(a->core, now + a->cfg.shutdown_timeout_ms);
        } else {
            pd_info("second stop signal: exiting now");
            pd_core_stop(a->core, now);
        }
    }
}

int main(int argc, char **argv)
{
    const char *path = DEFAULT_CONFIG;
    int check_only = 0, opt;
    while ((opt = getopt(argc, argv, "c:thV")) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            check_only = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("pushd %s (%s)\n", PUSHD_VERSION, curl_version());
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }

    app a = {.sigfd = -1};
    char err[600];
    if (pd_config_defaults(&a.cfg) != 0) {
        fprintf(stderr, "pushd: out of memory\n");
        return 1;
    }
    if (pd_config_load(&a.cfg, path, err, sizeof err) != 0) {
        fprintf(stderr, "pushd: %s\n", err);
        pd_config_free(&a.cfg);
        return 2;
    }
    pd_log_level = a.cfg.log_level;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "pushd: curl_global_init failed\n");
        pd_config_free(&a.cfg);
        return 1;
    }

    int rc = 2;
    pd_apns *apns = NULL;
    pd_oauth *oauth = NULL;
    pd_http *http = NULL;
    if (a.cfg.apns_key_file && !(apns = pd_apns_new(&a.cfg, err, sizeof err))) {
        fprintf(stderr, "pushd: %s: %s\n", path, err);
        goto out;
    }
    if (a.cfg.ca_file && access(a.cfg.ca_file, R_OK) != 0) {
        fprintf(stderr, "pushd: %s: ca_file: %s: %s\n", path, a.cfg.ca_file, strerror(errno));
        goto out;
    }
    if (a.cfg.log_file && pd_log_open(a.cfg.log_file) != 0) {
        fprintf(stderr, "pushd: %s: log_file: %s: %s\n", path, a.cfg.log_file, strerror(errno));
        goto out;
    }
    rc = 1;
    a.loop = pd_loop_new();
    if (!a.loop) goto fail;
    pd_http_opts ho = {a.cfg.ca_file, a.cfg.connections, a.cfg.concurrency,
                       (long)a.cfg.request_timeout_ms, (long)a.cfg.connect_timeout_ms};
    if (!(http = pd_http_new(a.loop, &ho, err, sizeof err))) {
        fprintf(stderr, "pushd: %s\n", err);
        goto out;
    }
    if (a.cfg.fcm_service_account && !(oauth = pd_oauth_new(&a.cfg, http, err, sizeof err))) {
        fprintf(stderr, "pushd: %s: %s\n", path, err);
        rc = 2;
        goto out;
    }
    if (check_only) {
        printf("pushd: %s: configuration OK\n", path);
        rc = 0;
        goto out;
    }

    /* Signals arrive through a signalfd; SIGPIPE is ignored (a peer that
     * closes a socket must only fail that request). */
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0 ||
        (a.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)) < 0 ||
        pd_loop_watch(a.loop, a.sigfd, PD_READ, on_signal, &a) != 0) {
        fprintf(stderr, "pushd: signals: %s\n", strerror(errno));
        goto out;
    }

    pd_stat.started_wall_ms = pd_wall_ms();
    a.core = pd_core_new(a.loop, &a.cfg, http, apns, oauth);
    if (!a.core) goto fail;
    pd_info("started: consumer %s in group %s on %spush, redis %s; apns %s, fcm %s", a.cfg.consumer,
            a.cfg.group, a.cfg.stream_prefix, a.cfg.redis, apns ? "on" : "off",
            oauth ? "on" : "off");
    if (a.cfg.stats_file) on_stats(a.loop, &a);

    while (!pd_core_finished(a.core)) {
        if (pd_loop_run_once(a.loop, 500) != 0) {
            pd_err("event loop: %s", strerror(errno));
            goto out;
        }
        pd_core_flush(a.core);
    }
    rc = 0;
    write_stats(&a);
    pd_info("stopped");
    goto out;
fail:
    fprintf(stderr, "pushd: out of memory\n");
out:
    /* Order matters: aborted requests report to the core and oauth. */
    pd_http_free(http);
    pd_core_free(a.core);
    pd_oauth_free(oauth);
    pd_apns_free(apns);
    if (a.loop) pd_timer_cancel(a.loop, &a.stats_timer);
    if (a.sigfd >= 0) close(a.sigfd);
    pd_loop_free(a.loop);
    pd_config_free(&a.cfg);
    pd_log_close();
    curl_global_cleanup();
    return rc;
}
