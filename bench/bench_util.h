/* bench_util — what the load generators in bench/ have in common.
 *
 * broker_bench and presence_bench both drive 1:1 QoS-1 messages through a
 * running broker (plain mosquitto, or mosquitto + mqchat) with libmosquitto
 * and report latencies and CPU figures. What they do alike lives here, so
 * that both measure, stamp, sign and parse in the same way:
 *
 *   process    program name for fatal errors, the stop request (SIGINT,
 *              SIGTERM), the first error of a worker;
 *   clock      ns since bench_init(), CPU time of this process, of another
 *              one (/proc/<pid>/stat) and of the machine (/proc/stat);
 *   samples    latencies in microseconds and their percentiles;
 *   body       the header every bench message body starts with (send or
 *              due time, pair index, per-sender counter);
 *   mqchat     topics, 1:1 conversation ids, device tokens (HS256 JWTs
 *              signed with the broker's secret), the SendRequest;
 *   loop       libmosquitto clients without their threads, driven by one
 *              epoll loop per worker thread;
 *   pacing     open-loop sending at a fixed rate;
 *   options    table-driven long options.
 *
 * Nothing here knows about modes, measurement windows or what a program
 * counts: that stays in each program. Errors that leave a benchmark nothing
 * sensible to measure (out of memory, epoll failing, an unreadable secret)
 * end the process through bench_die(), exit status 2.
 *
 * The clock, CPU and /proc readers, bench_die() and the stop request may
 * be used from any thread; everything else belongs to one thread at a time
 * (a bench_loop and its clients to the worker thread that pumps it).
 */
#ifndef MQCHAT_BENCH_UTIL_H
#define MQCHAT_BENCH_UTIL_H

#include <mosquitto.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* ------------------------------------------------------------------------ */
/* Process                                                                  */

/* Names the program ("broker_bench") for bench_die(), starts the clock of
 * bench_now_ns(), ignores SIGPIPE and turns SIGINT and SIGTERM into a stop
 * request (bench_stopping()). Call it first in main(). */
void bench_init(const char *progname);

/* Prints "<progname>: <message>" on stderr and exits with status 2. */
__attribute__((format(printf, 1, 2), noreturn)) void bench_die(const char *fmt, ...);

/* 1 once a stop was requested (a signal, or bench_stop()); any thread. */
int bench_stopping(void);

/* Requests a stop, as SIGINT does; any thread. */
void bench_stop(void);

/* A number that differs between runs (time and pid): client message ids
 * that include it do not collide with a previous run's in the store. */
uint32_t bench_run_nonce(void);

/* Formats a message into buf (size bytes) unless buf already holds one:
 * keeps the first error of a worker, printed at the end. */
__attribute__((format(printf, 3, 4))) void bench_note(char *buf, size_t size, const char *fmt, ...);

/* ------------------------------------------------------------------------ */
/* Clock and CPU                                                            */

/* CLOCK_MONOTONIC in ns since bench_init(). All timestamps the benchmarks
 * embed in messages or compare are on this clock. */
uint64_t bench_now_ns(void);

/* The clock id in ns (e.g. CLOCK_PROCESS_CPUTIME_ID: this process's CPU). */
uint64_t bench_cpu_ns(clockid_t id);

/* utime + stime of process pid in ns, all its threads or, with main_thread,
 * its main thread alone (a broker's event loop); 0 when pid <= 0 or it
 * cannot be read. Resolution: clock ticks (usually 10 ms). */
uint64_t bench_proc_cpu_ns(int pid, int main_thread);

/* Busy and total jiffies of the whole machine since boot, from the "cpu"
 * line of /proc/stat (busy: all but idle and iowait); both 0 when it cannot
 * be read. */
void bench_machine_cpu(uint64_t *busy, uint64_t *total);

/* ------------------------------------------------------------------------ */
/* Latency samples                                                          */

/* A growing array of latencies in microseconds (saturated at UINT32_MAX).
 * Zero-initialised it is empty. */
struct bench_samples {
    uint32_t *v;
    size_t n, cap;
};

/* Adds a latency of ns nanoseconds. */
void bench_samples_add(struct bench_samples *s, uint64_t ns);

/* Sorts the samples in ascending order; bench_percentile() and
 * bench_samples_max() need it. */
void bench_samples_sort(struct bench_samples *s);

/* The p-th percentile (0 <= p < 100) of sorted samples: the value at index
 * p/100 * n, the largest one for indices past the end; 0 when empty. */
uint32_t bench_percentile(const struct bench_samples *s, double p);

/* The largest of sorted samples; 0 when empty. */
uint32_t bench_samples_max(const struct bench_samples *s);

/* ------------------------------------------------------------------------ */
/* Message body                                                             */

/* A bench body starts with a header, little endian: time (8; bench clock,
 * ns: when it was sent or was due), pair index (4), per-sender counter (8);
 * the rest is filler. Bodies are at least this long. */
#define BENCH_BODY_HDR 20

/* A malloc'ed body of len bytes of filler ("abc...z" repeated), to copy
 * before bench_body_stamp(). */
unsigned char *bench_body_template(int len);

/* Writes the header into body (at least BENCH_BODY_HDR bytes). */
void bench_body_stamp(unsigned char *body, uint64_t ts, uint32_t idx, uint64_t n);

/* Reads the header of a body of len bytes; -1 when it is too short. */
int bench_body_parse(const unsigned char *body, size_t len, uint64_t *ts, uint32_t *idx,
                     uint64_t *n);

/* ------------------------------------------------------------------------ */
/* mqchat                                                                   */

/* "<prefix>/u/<user>/d/d/send" (is_sender) or "<prefix>/u/<user>/inbox":
 * where device "d" of user sends, or where it receives. */
void bench_mqchat_topic(char *buf, size_t size, const char *prefix, const char *user,
                        int is_sender);

/* The 1:1 conversation id of users a and b: "d:<a>:<b>", the two in byte
 * order. */
void bench_conv_id(char *buf, size_t size, const char *a, const char *b);

/* A malloc'ed HS256 JWT for device of user: claims sub, did, exp (now +
 * ttl_s) and, when not NULL, iss and aud, signed with the secret in
 * secret_file (read on the first call and kept). Dies when the program was
 * built without mqchat_jwt or the secret cannot be read. */
char *bench_token(const char *secret_file, const char *user, const char *device, long ttl_s,
                  const char *iss, const char *aud);

/* Publishes SendRequest{client_msg_id, conversation_id conv, body} at QoS 1
 * on topic; returns mosquitto_publish()'s result. */
int bench_publish_send(struct mosquitto *m, const char *topic, const char *client_msg_id,
                       const char *conv, const unsigned char *body, int len);

/* 1 when topic ends in "/ack" (where the SendAcks come). */
int bench_is_ack_topic(const char *topic);

/* ------------------------------------------------------------------------ */
/* Client loop: libmosquitto without its threads                            */

struct bench_loop;

/* One libmosquitto client of a bench_loop; embed it in the program's
 * client struct. */
struct bench_conn {
    struct mosquitto *m;
    struct bench_loop *loop;
    int want_out; /* EPOLLOUT registered */
    int touched;  /* in loop->touched */
};

/* The clients of one worker thread and the epoll set over their sockets.
 * libmosquitto writes at once and only keeps what the socket did not take,
 * so EPOLLOUT is registered only while a client has something pending;
 * clients that may have changed that are "touched" and checked at the top
 * of the next bench_loop_pump(). */
struct bench_loop {
    int ep;
    struct bench_conn **conns; /* for mosquitto_loop_misc() */
    int nconns;
    struct bench_conn **touched;
    int ntouched;
    uint64_t last_misc;
};

/* The callbacks of a client; userdata is the ud of bench_conn_new(). */
struct bench_callbacks {
    void (*on_connect)(struct mosquitto *, void *, int);
    void (*on_disconnect)(struct mosquitto *, void *, int);
    void (*on_subscribe)(struct mosquitto *, void *, int, int, const int *);
    void (*on_publish)(struct mosquitto *, void *, int);
    void (*on_message)(struct mosquitto *, void *, const struct mosquitto_message *);
};

/* Sets up an empty loop for at most max_conns clients. */
void bench_loop_init(struct bench_loop *l, int max_conns);

/* Creates c's client (not connected): client id, clean session, userdata
 * ud, MQTT 3.1.1, TCP_NODELAY, no libmosquitto in-flight limit (the bench's
 * window is the limit), username and password when user is not NULL, the
 * callbacks cb. */
void bench_conn_new(struct bench_conn *c, struct bench_loop *l, const char *id, void *ud,
                    const char *user, const char *password, const struct bench_callbacks *cb);

/* Adds c to the clients whose mosquitto_loop_misc() l runs (keepalive). */
void bench_loop_add(struct bench_loop *l, struct bench_conn *c);

/* Connects c (mosquitto_connect) and adds its socket to the loop's epoll
 * set; returns the mosquitto error code (errno is kept on MOSQ_ERR_ERRNO). */
int bench_conn_connect(struct bench_conn *c, const char *host, int port, int keepalive);

/* 1 when a SUBACK (qos_count and granted_qos of the subscribe callback)
 * granted the first subscription, 0 when the broker refused it (0x80). */
int bench_suback_ok(int qos_count, const int *granted_qos);

/* The text of a mosquitto error code; strerror(errno) for MOSQ_ERR_ERRNO. */
const char *bench_mosq_strerror(int rc);

/* Marks c for the EPOLLOUT check at the top of the next bench_loop_pump();
 * call it after publishing from c. */
void bench_conn_touch(struct bench_conn *c);

/* One pass: (un)registers EPOLLOUT for the touched clients, waits up to
 * timeout_ns, reads every readable socket dry and writes the writable
 * ones (callbacks run in here). */
void bench_loop_pump(struct bench_loop *l, uint64_t timeout_ns);

/* Runs mosquitto_loop_misc() on every client of bench_loop_add() when a
 * second has passed since it last did (now: bench_now_ns()). */
void bench_loop_misc(struct bench_loop *l, uint64_t now);

/* ------------------------------------------------------------------------ */
/* Open-loop pacing                                                         */

/* Message k (from 0) is due at start + k / rate, whether or not the ones
 * before went out: the time it was due is what a message carries, so a
 * stall shows up as latency (no coordinated omission). */
struct bench_pacer {
    uint64_t issued;      /* messages sent so far */
    uint64_t backlog_max; /* most messages due and not sent, at any call */
};

/* Sends the next message, due at due_ns; 0 when it went out, -1 when it
 * could not (every window full, or an error). */
typedef int (*bench_send_fn)(void *ctx, uint64_t due_ns);

/* Calls send(ctx, due) for every message due by now at rate msgs/s since
 * start_ns, until it returns -1. Returns ns until the next message is due,
 * or UINT64_MAX when a backlog waits (an acknowledgement wakes the loop). */
uint64_t bench_pace(struct bench_pacer *p, uint64_t start_ns, double rate, uint64_t now,
                    bench_send_fn send, void *ctx);

/* ------------------------------------------------------------------------ */
/* Options                                                                  */

enum bench_opt_kind {
    BENCH_OPT_INT,    /* int *: atoi(argument) */
    BENCH_OPT_DOUBLE, /* double *: atof(argument) */
    BENCH_OPT_STR,    /* const char **: the argument */
    BENCH_OPT_FLAG,   /* int *: 1, no argument */
    BENCH_OPT_CHOICE, /* int *: index of the argument in choices */
};

/* A long option "--name". */
struct bench_opt {
    const char *name;
    enum bench_opt_kind kind;
    void *dst;
    const char *choices; /* BENCH_OPT_CHOICE: the words, "|"-separated ("plain|mqchat") */
};

/* Parses argv against opts (ended by an entry with name NULL) with
 * getopt_long (unambiguous prefixes allowed). Returns 0, or -1 for an
 * unknown option (getopt_long says which on stderr), a word not among the
 * choices, --help, or an argument that is not an option: the caller prints
 * its usage. Values are not range-checked: the caller does that. */
int bench_parse_opts(int argc, char **argv, const struct bench_opt *opts);

#endif
