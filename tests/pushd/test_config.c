/* test_config — pushd's configuration parser (pushd/src/config.c): every
 * type of key, defaults, the one-line errors that name the key, and the
 * checks across keys. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

#define APNS "apns_key_file = /k.p8\napns_key_id = K\napns_team_id = T\n"

static int parse(pd_config *c, const char *text, char *err)
{
    assert_int_equal(pd_config_defaults(c), 0);
    return pd_config_parse(c, text, "t.conf", err, 300);
}

static void defaults(void **state)
{
    pd_config c;
    char err[300];
    assert_int_equal(parse(&c, APNS, err), 0);
    assert_string_equal(c.redis_host, "127.0.0.1");
    assert_int_equal(c.redis_port, 6379);
    assert_null(c.redis_unix);
    assert_string_equal(c.stream_prefix, "mqchat:");
    assert_string_equal(c.group, "pushd");
    char want[300], host[256] = "";
    gethostname(host, sizeof host);
    snprintf(want, sizeof want, "%s-%d", host, (int)getpid());
    assert_string_equal(c.consumer, want);
    assert_string_equal(c.apns_endpoint, "https://api.push.apple.com");
    assert_string_equal(c.apns_sandbox_endpoint, "https://api.sandbox.push.apple.com");
    assert_string_equal(c.fcm_endpoint, "https://fcm.googleapis.com");
    assert_int_equal(c.claim_min_idle_ms, 60000);
    assert_int_equal(c.apns_token_refresh_ms, 50 * 60000);
    assert_int_equal(c.log_level, PD_LOG_INFO);
    assert_int_equal(c.delete_acked, 1);
    pd_config_free(&c);
}

static void every_type(void **state)
{
    pd_config c;
    char err[300];
    const char *text = "# a comment\n"
                       "   # an indented comment\n"
                       "\n"
                       "redis = unix:/run/redis.sock\n"
                       "redis_password = p#ss = word \n"
                       "stream_prefix = \n"
                       "concurrency = 42\r\n"
                       "backoff_base = 250ms\n"
                       "backoff_max = 2m\n"
                       "message_ttl = 1h\n"
                       "claim_min_idle = 30\n"
                       "delete_acked = off\n"
                       "log_level = debug\n"
                       "fcm_endpoint = https://fcm.example/\n"
                       "fcm_service_account = /sa.json\n";
    assert_int_equal(parse(&c, text, err), 0);
    assert_null(c.redis_host);
    assert_string_equal(c.redis_unix, "/run/redis.sock");
    assert_string_equal(c.redis_password, "p#ss = word");
    assert_string_equal(c.stream_prefix, "");
    assert_int_equal(c.concurrency, 42);
    assert_int_equal(c.backoff_base_ms, 250);
    assert_int_equal(c.backoff_max_ms, 120000);
    assert_int_equal(c.message_ttl_ms, 3600000);
    assert_int_equal(c.claim_min_idle_ms, 30000);
    assert_int_equal(c.delete_acked, 0);
    assert_int_equal(c.log_level, PD_LOG_DEBUG);
    assert_string_equal(c.fcm_endpoint, "https://fcm.example"); /* trailing slash dropped */
    pd_config_free(&c);

    assert_int_equal(parse(&c, APNS "redis = [::1]:6380\n", err), 0);
    assert_string_equal(c.redis_host, "::1");
    assert_int_equal(c.redis_port, 6380);
    pd_config_free(&c);
}

/* Each bad line gives one error naming the file, line and key. */
static void errors_name_the_key(void **state)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {APNS "concurrency = lots\n", "t.conf:4: concurrency: must be an integer"},
        {APNS "concurrency = 0\n", "t.conf:4: concurrency: must be an integer from 1"},
        {APNS "backoff_base = 5 s\n", "t.conf:4: backoff_base: must be a duration"},
        {APNS "block = 1d\n", "t.conf:4: block: must be a duration"},
        {APNS "redis = localhost\n", "t.conf:4: redis: must be host:port or unix:/path"},
        {APNS "redis = h:99999\n", "t.conf:4: redis: must be host:port"},
        {APNS "delete_acked = maybe\n", "t.conf:4: delete_acked: must be yes or no"},
        {APNS "log_level = loud\n", "t.conf:4: log_level: must be error, warn, info or debug"},
        {APNS "apns_endpoint = ftp://x\n", "t.conf:4: apns_endpoint: must be an http(s):// URL"},
        {APNS "colour = blue\n", "t.conf:4: colour: unknown key"},
        {APNS "just words\n", "t.conf:4: expected \"key = value\""},
        {APNS "group = a\ngroup = b\n", "t.conf:5: group: given twice (first on line 4)"},
        {APNS "group =\n", "t.conf:4: group: must not be empty"},
        {APNS "apns_token_refresh = 10m\n", "t.conf:4: apns_token_refresh: must be a duration"},
        {"apns_key_file = /k\n", "t.conf: apns_key_id: required when APNs is configured"},
        {"apns_key_id = K\napns_team_id = T\n", "t.conf: apns_key_file: required"},
        {"", "t.conf: apns_key_file, fcm_service_account: no provider configured"},
        {APNS "backoff_base = 10s\nbackoff_max = 1s\n", "t.conf: backoff_base: larger than"},
        {APNS "block = 5s\nclaim_min_idle = 6s\n", "t.conf: claim_min_idle: must be at least"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pd_config c;
        char err[300] = "";
        assert_int_equal(parse(&c, cases[i].text, err), -1);
        if (strncmp(err, cases[i].want, strlen(cases[i].want)) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s...\"", i, err, cases[i].want);
        assert_null(strchr(err, '\n'));
        pd_config_free(&c);
    }
}

static void durations(void **state)
{
    assert_int_equal(pd_parse_duration_ms("0"), 0);
    assert_int_equal(pd_parse_duration_ms("15"), 15000);
    assert_int_equal(pd_parse_duration_ms("15s"), 15000);
    assert_int_equal(pd_parse_duration_ms("15ms"), 15);
    assert_int_equal(pd_parse_duration_ms("2m"), 120000);
    assert_int_equal(pd_parse_duration_ms("2h"), 7200000);
    assert_int_equal(pd_parse_duration_ms(""), -1);
    assert_int_equal(pd_parse_duration_ms("-1"), -1);
    assert_int_equal(pd_parse_duration_ms("1.5s"), -1);
    assert_int_equal(pd_parse_duration_ms("s"), -1);
    assert_int_equal(pd_parse_duration_ms("99999999999999999999h"), -1);
}

static void load_file(void **state)
{
    char path[] = "/tmp/pushd-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = APNS "consumer = c1\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (int)(sizeof text - 1));
    close(fd);
    pd_config c;
    char err[300];
    assert_int_equal(pd_config_defaults(&c), 0);
    assert_int_equal(pd_config_load(&c, path, err, sizeof err), 0);
    assert_string_equal(c.consumer, "c1");
    pd_config_free(&c);
    unlink(path);
    assert_int_equal(pd_config_defaults(&c), 0);
    assert_int_equal(pd_config_load(&c, path, err, sizeof err), -1);
    assert_non_null(strstr(err, "No such file"));
    pd_config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults),
        cmocka_unit_test(every_type),
        cmocka_unit_test(errors_name_the_key),
        cmocka_unit_test(durations),
        cmocka_unit_test(load_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
