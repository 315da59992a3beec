/* test_ids — common/mqc_id.h: one validator per identifier kind, the same
 * answer for the store, the wire decoders, the topic parser and the JWT
 * verifier. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "mqc_id.h"

static char *fill(char *buf, char c, size_t n)
{
    memset(buf, c, n);
    buf[n] = '\0';
    return buf;
}

static void test_user_and_device(void **state)
{
    (void)state;
    char buf[300];
    for (int k = MQC_ID_USER; k <= MQC_ID_DEVICE; k++) {
        assert_true(mqc_id_valid(k, "a"));
        assert_true(mqc_id_valid(k, "Alice.B_c-0"));
        assert_true(mqc_id_valid(k, fill(buf, 'z', MQC_ID_MAX)));
        assert_false(mqc_id_valid(k, fill(buf, 'z', MQC_ID_MAX + 1)));
        const char *bad[] = {"", "a:b", "a/b", "a+b", "a#", "a b", "\xc3\xa9", "$a", "a\n"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
            if (mqc_id_valid(k, bad[i])) fail_msg("kind %d accepted bad[%zu]", k, i);
        assert_false(mqc_id_valid(k, NULL));
    }
}

static void test_client_and_key(void **state)
{
    (void)state;
    char buf[300];
    for (int k = MQC_ID_CLIENT; k <= MQC_ID_KEY; k += MQC_ID_KEY - MQC_ID_CLIENT) {
        assert_true(mqc_id_valid(k, "m-1"));
        assert_true(mqc_id_valid(k, "d:alice:bob")); /* ':' is allowed */
        assert_true(mqc_id_valid(k, fill(buf, ':', MQC_ID_MAX)));
        assert_false(mqc_id_valid(k, fill(buf, 'x', MQC_ID_MAX + 1)));
        assert_false(mqc_id_valid(k, ""));
        assert_false(mqc_id_valid(k, "a/b"));
        assert_false(mqc_id_valid(k, "a\x7f"));
        assert_false(mqc_id_valid(k, NULL));
    }
}

static void test_conversations(void **state)
{
    (void)state;
    char buf[300], g[100], u[200];
    assert_true(mqc_id_valid(MQC_ID_CONV, "d:alice:bob"));
    assert_true(mqc_id_valid(MQC_ID_CONV, "g:0aZ"));
    snprintf(buf, sizeof(buf), "g:%s", fill(g, 'Z', MQC_GROUP_ID_MAX));
    assert_true(mqc_id_valid(MQC_ID_CONV, buf));
    snprintf(buf, sizeof(buf), "g:%s", fill(g, 'Z', MQC_GROUP_ID_MAX + 1));
    assert_false(mqc_id_valid(MQC_ID_CONV, buf));
    assert_false(mqc_id_valid(MQC_ID_CONV, "d:bob:alice")); /* unordered */
    assert_false(mqc_id_valid(MQC_ID_CONV, "g:a-b"));
    assert_false(mqc_id_valid(MQC_ID_CONV, "x:1"));
    /* Every valid conversation id is a valid store key. */
    snprintf(buf, sizeof(buf), "d:a:%s", fill(u, 'b', MQC_ID_MAX - 4));
    assert_true(mqc_id_valid(MQC_ID_CONV, buf));
    assert_true(mqc_id_valid(MQC_ID_KEY, buf));
    snprintf(buf, sizeof(buf), "d:a:%s", fill(u, 'b', MQC_ID_MAX - 3));
    assert_false(mqc_id_valid(MQC_ID_CONV, buf));

    char a[MQC_ID_BUF], b[MQC_ID_BUF];
    assert_int_equal(mqc_conv_direct("d:alice:bob", a, b), 0);
    assert_string_equal(a, "alice");
    assert_string_equal(b, "bob");
    assert_int_equal(mqc_conv_direct("g:abc", a, b), -1);
    assert_int_equal(mqc_conv_direct(NULL, a, b), -1);
    assert_true(mqc_conv_is_group("g:"));
    assert_false(mqc_conv_is_group("d:a:b"));
    assert_false(mqc_conv_is_group(NULL));
}

static void test_chat_client_ids(void **state)
{
    (void)state;
    char buf[400], u[200];
    assert_true(mqc_client_id_is_chat("bob:phone"));
    assert_true(mqc_client_id_is_chat("a.b-c_d:0"));
    snprintf(buf, sizeof(buf), "%s:%s", fill(u, 'u', MQC_ID_MAX), "d");
    assert_true(mqc_client_id_is_chat(buf));
    snprintf(buf, sizeof(buf), "%s:%s", fill(u, 'u', MQC_ID_MAX + 1), "d");
    assert_false(mqc_client_id_is_chat(buf));
    const char *no[] = {"bob",       "bob:",      ":phone", "bob:phone:x", "bob:ph one",
                        "b b:phone", "sensor-17", "",       "bob/x:phone"};
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        if (mqc_client_id_is_chat(no[i])) fail_msg("'%s' taken for a chat client id", no[i]);
    assert_false(mqc_client_id_is_chat(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_user_and_device),
        cmocka_unit_test(test_client_and_key),
        cmocka_unit_test(test_conversations),
        cmocka_unit_test(test_chat_client_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
