/* fuzz_jwt — libFuzzer target for plugin/src/jwt.c, the CONNECT password
 * check. The input is used twice:
 *   1. as a token, verified by two fixed HS256 verifiers (plain; and one
 *      with issuer, audience, no leeway and a short max length);
 *   2. as claims JSON, signed with mqjwt_sign_hs256 under the verifiers'
 *      secret, and the token verified — so the fuzzer reaches the claim
 *      checks behind the signature, which it could never forge.
 * Invariants (abort() when broken): error strings are NUL-terminated; a
 * failed verify zeroes the claims; a verified token has valid ids, the
 * HS256 alg, is not expired at FUZZ_NOW, and matches its own MQTT identity
 * but no other; a signed token with its last signature character changed
 * never verifies.
 *
 * make-corpus.sh signs its seed tokens with the same secret (keep
 * FUZZ_JWT_SECRET in step with it). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_JWT_SECRET "mqchat-fuzz-secret-0123456789abcdef"
#define FUZZ_NOW 1700000000LL

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_jwt: invariant broken at %s:%d: %s\n", __FILE__, __LINE__,       \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define NVERIFIERS 2
static mqjwt_verifier *verifiers[NVERIFIERS];
static const int64_t leeways[NVERIFIERS] = {30, 0};

static void init(void)
{
    if (verifiers[0]) return;
    mqjwt_config cfg[NVERIFIERS];
    memset(cfg, 0, sizeof(cfg));
    for (int i = 0; i < NVERIFIERS; i++) {
        cfg[i].hs256_secret = FUZZ_JWT_SECRET;
        cfg[i].hs256_secret_len = sizeof(FUZZ_JWT_SECRET) - 1;
        cfg[i].leeway_s = leeways[i];
    }
    cfg[1].issuer = "https://auth.example";
    cfg[1].audience = "mqchat";
    cfg[1].max_token_len = 600;
    for (int i = 0; i < NVERIFIERS; i++) {
        char *msg = NULL;
        verifiers[i] = mqjwt_verifier_new(&cfg[i], &msg);
        if (!verifiers[i]) {
            fprintf(stderr, "fuzz_jwt: verifier %d: %s\n", i, msg ? msg : "?");
            abort();
        }
        free(msg);
    }
}

/* Verify tok with verifier i; check the result's invariants. */
static int verify(int i, const char *tok)
{
    mqjwt_claims c;
    char err[200];
    memset(err, 'x', sizeof(err));
    int rc = mqjwt_verify(verifiers[i], tok, FUZZ_NOW, &c, err, sizeof(err));
    CHECK(memchr(err, '\0', sizeof(err)) != NULL);
    CHECK(rc <= 0 && rc >= MQJWT_ERR_IO);
    CHECK(mqjwt_strerror(rc) != NULL);
    if (rc != MQJWT_OK) {
        static const mqjwt_claims zero;
        CHECK(memcmp(&c, &zero, sizeof(c)) == 0);
        return rc;
    }
    CHECK(err[0] == '\0');
    CHECK(mqc_id_valid(MQC_ID_USER, c.sub) && mqc_id_valid(MQC_ID_USER, c.did));
    CHECK(c.alg == MQJWT_ALG_HS256);
    CHECK(FUZZ_NOW < c.exp + leeways[i]);
    CHECK(!c.has_nbf || FUZZ_NOW >= c.nbf - leeways[i]);

    char cid[2 * MQJWT_ID_MAX + 8];
    snprintf(cid, sizeof(cid), "%s:%s", c.sub, c.did);
    CHECK(mqjwt_check_identity(&c, c.sub, cid, err, sizeof(err)) == MQJWT_OK);
    CHECK(mqjwt_check_identity(&c, c.did, cid, err, sizeof(err)) != MQJWT_OK ||
          strcmp(c.did, c.sub) == 0);
    snprintf(cid, sizeof(cid), "%s:%s-x", c.sub, c.did);
    CHECK(mqjwt_check_identity(&c, c.sub, cid, err, sizeof(err)) == MQJWT_ERR_IDENTITY);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init();
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';

    /* 1. The input as a token. */
    for (int i = 0; i < NVERIFIERS; i++)
        verify(i, s);

    /* 2. The input as claims, signed with the right secret. */
    char *tok = NULL;
    int rc = mqjwt_sign_hs256(FUZZ_JWT_SECRET, sizeof(FUZZ_JWT_SECRET) - 1, s, &tok);
    CHECK(rc == MQJWT_OK || rc == MQJWT_ERR_INVALID_ARG || rc == MQJWT_ERR_NOMEM);
    CHECK((rc == MQJWT_OK) == (tok != NULL));
    if (tok) {
        for (int i = 0; i < NVERIFIERS; i++)
            verify(i, tok);
        /* A signature that differs in its last character never verifies. */
        size_t n = strlen(tok);
        CHECK(n > 0 && tok[n - 1] != '.');
        tok[n - 1] = tok[n - 1] == 'A' ? 'Q' : 'A';
        for (int i = 0; i < NVERIFIERS; i++)
            CHECK(verify(i, tok) != MQJWT_OK);
        free(tok);
    }
    free(s);
    return 0;
}
