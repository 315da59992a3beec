/*
 * mqchat-token - mint an HS256 JWT for mqchat (development and tests).
 *
 *   mqchat-token (--secret-file FILE | --secret STRING) --user U --device D
 *                [--iss X] [--aud Y] [--ttl SECONDS]
 *
 * Prints the token and a newline. Claims: sub=U, did=D, iat=now,
 * exp=now+ttl, and iss / aud when given. The device then connects with
 * username U, password <token>, client id "U:D".
 * Exit status: 0 ok, 1 runtime error, 2 usage error.
 */
#include "jwt.h"

#include <cJSON.h>

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TTL_DEFAULT 86400LL
#define TTL_MAX (10LL * 366 * 86400)

static void usage(FILE *out)
{
    fprintf(out,
            "usage: mqchat-token (--secret-file FILE | --secret STRING) --user U --device D\n"
            "                    [--iss X] [--aud Y] [--ttl SECONDS]\n"
            "\n"
            "Prints an HS256 JWT for MQTT username U, client id \"U:D\".\n"
            "  --secret-file FILE  shared secret file (trailing newlines ignored)\n"
            "  --secret STRING     shared secret (visible in ps; prefer --secret-file)\n"
            "                      the secret must be at least %d bytes\n"
            "  --user U            user id, 1..%d chars of [A-Za-z0-9._-]\n"
            "  --device D          device id, same syntax\n"
            "  --iss X             issuer claim\n"
            "  --aud Y             audience claim\n"
            "  --ttl SECONDS       lifetime, 1..%lld (default %lld)\n",
            MQJWT_HS256_MIN_SECRET_LEN, MQJWT_ID_MAX, TTL_MAX, TTL_DEFAULT);
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("mqchat-token: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(run mqchat-token --help for usage)\n", stderr);
    return 2;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"secret-file", required_argument, NULL, 'f'},
        {"secret", required_argument, NULL, 's'},
        {"user", required_argument, NULL, 'u'},
        {"device", required_argument, NULL, 'd'},
        {"iss", required_argument, NULL, 'i'},
        {"aud", required_argument, NULL, 'a'},
        {"ttl", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *secret_file = NULL, *secret_str = NULL, *user = NULL, *device = NULL;
    const char *iss = NULL, *aud = NULL, *ttl_str = NULL;
    unsigned char *secret = NULL;
    size_t secret_len = 0;
    long long ttl = TTL_DEFAULT;
    char *claims = NULL, *token = NULL, *errmsg = NULL;
    cJSON *obj = NULL;
    time_t now;
    int c, rc, status = 1;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            secret_file = optarg;
            break;
        case 's':
            secret_str = optarg;
            break;
        case 'u':
            user = optarg;
            break;
        case 'd':
            device = optarg;
            break;
        case 'i':
            iss = optarg;
            break;
        case 'a':
            aud = optarg;
            break;
        case 't':
            ttl_str = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            return usage_error("option %s needs an argument", argv[optind - 1]);
        default:
            if (optopt) return usage_error("unknown option -%c", optopt);
            return usage_error("unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc) return usage_error("unexpected argument \"%s\"", argv[optind]);
    if (!secret_file == !secret_str)
        return usage_error("give exactly one of --secret-file and --secret");
    if (!user) return usage_error("--user is required");
    if (!device) return usage_error("--device is required");
    if (!mqc_id_valid(MQC_ID_USER, user))
        return usage_error("--user must be 1..%d characters of [A-Za-z0-9._-]", MQJWT_ID_MAX);
    if (!mqc_id_valid(MQC_ID_USER, device))
        return usage_error("--device must be 1..%d characters of [A-Za-z0-9._-]", MQJWT_ID_MAX);
    if (iss && !iss[0]) return usage_error("--iss must not be empty");
    if (aud && !aud[0]) return usage_error("--aud must not be empty");
    if (ttl_str) {
        char *end = NULL;
        errno = 0;
        ttl = strtoll(ttl_str, &end, 10);
        if (errno || end == ttl_str || *end || ttl < 1 || ttl > TTL_MAX)
            return usage_error("--ttl must be an integer from 1 to %lld seconds", TTL_MAX);
    }

    if (secret_file) {
        rc = mqjwt_load_secret_file(secret_file, &secret, &secret_len, &errmsg);
        if (rc != MQJWT_OK) {
            fprintf(stderr, "mqchat-token: %s\n", errmsg ? errmsg : mqjwt_strerror(rc));
            free(errmsg);
            return rc == MQJWT_ERR_IO ? 1 : 2;
        }
    } else {
        secret_len = strlen(secret_str);
        secret = malloc(secret_len ? secret_len : 1);
        if (!secret) {
            fputs("mqchat-token: out of memory\n", stderr);
            return 1;
        }
        memcpy(secret, secret_str, secret_len);
    }
    if (secret_len < MQJWT_HS256_MIN_SECRET_LEN) {
        mqjwt_secret_free(secret, secret_len);
        return usage_error("the secret has %zu bytes; at least %d are required "
                           "(e.g. openssl rand -hex 32 > FILE)",
                           secret_len, MQJWT_HS256_MIN_SECRET_LEN);
    }

    now = time(NULL);
    obj = cJSON_CreateObject();
    if (!obj || !cJSON_AddStringToObject(obj, "sub", user) ||
        !cJSON_AddStringToObject(obj, "did", device) ||
        (iss && !cJSON_AddStringToObject(obj, "iss", iss)) ||
        (aud && !cJSON_AddStringToObject(obj, "aud", aud)) ||
        !cJSON_AddNumberToObject(obj, "iat", (double)now) ||
        !cJSON_AddNumberToObject(obj, "exp", (double)now + (double)ttl) ||
        !(claims = cJSON_PrintUnformatted(obj))) {
        fputs("mqchat-token: out of memory\n", stderr);
        goto out;
    }
    rc = mqjwt_sign_hs256(secret, secret_len, claims, &token);
    if (rc != MQJWT_OK) {
        fprintf(stderr, "mqchat-token: signing failed: %s\n", mqjwt_strerror(rc));
        goto out;
    }
    if (printf("%s\n", token) < 0 || fflush(stdout) != 0) {
        fprintf(stderr, "mqchat-token: cannot write token: %s\n", strerror(errno));
        goto out;
    }
    status = 0;
out:
    cJSON_Delete(obj);
    cJSON_free(claims);
    free(token);
    mqjwt_secret_free(secret, secret_len);
    return status;
}
