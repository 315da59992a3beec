/* fuzz_replay — runs a fuzz target's LLVMFuzzerTestOneInput on every file
 * of the given corpus directories (or on given files), without libFuzzer,
 * so that the seed and regression corpus is replayed in every ctest run
 * (see tests/fuzz/replay.cmake).
 *
 * Usage: fuzz_replay_<target> DIR|FILE...
 *        fuzz_replay_<target> --unhex FILE.hex OUTDIR
 * Files are run in name order; names starting with '.' and non-regular
 * files are skipped. Each input is copied into a buffer of exactly its
 * size, so that a sanitizer build catches reads past the end. A missing
 * path, an unreadable file, or no input at all is a failure (exit 1): a
 * misconfigured test must not pass by replaying nothing. A broken target
 * invariant abort()s.
 *
 * A file whose name ends in ".hex" holds many inputs, one per line as hex
 * digits (blank lines and lines starting with '#' are skipped): that is how
 * the corpus libFuzzer grew is committed as text (corpus/<target>/
 * found.hex, written by docs/FUZZING.md's merge step). --unhex writes its
 * inputs out as files, to seed a libFuzzer run with them. */
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_FILES_PER_DIR 100000
#define REPLAY_MAX_INPUT (16u << 20)

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fuzz_replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || st.st_size < 0 || (uintmax_t)st.st_size > REPLAY_MAX_INPUT) {
        fprintf(stderr, "fuzz_replay: %s: unreadable or larger than %u bytes\n", path,
                REPLAY_MAX_INPUT);
        fclose(f);
        return -1;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf || fread(buf, 1, n, f) != n) {
        fprintf(stderr, "fuzz_replay: %s: read failed\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Each line of a .hex file is one input: run it (outdir NULL) or write it
 * to outdir/<n>. Returns the number of inputs, or -1 on a bad line. */
static long run_hex(const char *path, const char *outdir)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "fuzz_replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long count = 0, lineno = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0 || line[0] == '#') continue;
        uint8_t *buf = malloc((size_t)len / 2 + 1);
        size_t n = 0;
        int bad = !buf || len % 2 != 0 || (size_t)len / 2 > REPLAY_MAX_INPUT;
        for (ssize_t i = 0; !bad && i < len; i += 2) {
            int hi = hexval(line[i]), lo = hexval(line[i + 1]);
            if (hi < 0 || lo < 0)
                bad = 1;
            else
                buf[n++] = (uint8_t)(hi << 4 | lo);
        }
        if (bad) {
            fprintf(stderr, "fuzz_replay: %s:%ld: not an even number of hex digits\n", path,
                    lineno);
            free(buf);
            count = -1;
            break;
        }
        if (outdir) {
            char out[4096];
            snprintf(out, sizeof(out), "%s/found-%06ld", outdir, count);
            FILE *o = fopen(out, "wb");
            if (!o || fwrite(buf, 1, n, o) != n || fclose(o) != 0) {
                fprintf(stderr, "fuzz_replay: %s: cannot write\n", out);
                free(buf);
                count = -1;
                break;
            }
        } else {
            /* The input alone in a buffer of its size, as for a file. */
            uint8_t *exact = malloc(n ? n : 1);
            if (exact) {
                memcpy(exact, buf, n);
                LLVMFuzzerTestOneInput(exact, n);
            }
            free(exact);
        }
        free(buf);
        count++;
    }
    free(line);
    fclose(f);
    return count;
}

static int skip_entry(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

/* Runs every regular file of dir; returns the count, or -1 on error. */
static long run_dir(const char *dir)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, skip_entry, alphasort);
    if (n < 0) {
        fprintf(stderr, "fuzz_replay: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    long count = 0;
    int failed = 0;
    for (int i = 0; i < n; i++) {
        if (i < MAX_FILES_PER_DIR && !failed) {
            char path[4096];
            struct stat st;
            int w = snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
            if (w < 0 || (size_t)w >= sizeof(path)) {
                fprintf(stderr, "fuzz_replay: %s/%s: path too long\n", dir, names[i]->d_name);
                failed = 1;
            } else if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
                long k = ends_with(path, ".hex") ? run_hex(path, NULL) : run_file(path) ? -1 : 1;
                if (k < 0)
                    failed = 1;
                else
                    count += k;
            }
        }
        free(names[i]);
    }
    free(names);
    if (n > MAX_FILES_PER_DIR)
        fprintf(stderr, "fuzz_replay: %s: only the first %d of %d entries replayed\n", dir,
                MAX_FILES_PER_DIR, n);
    return failed ? -1 : count;
}

int main(int argc, char **argv)
{
    long total = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR|FILE...  |  %s --unhex FILE.hex OUTDIR\n", argv[0], argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "--unhex") == 0) {
        if (argc != 4) return 2;
        long n = run_hex(argv[2], argv[3]);
        if (n < 0) return 1;
        printf("fuzz_replay: %ld inputs written to %s\n", n, argv[3]);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        struct stat st;
        long n;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "fuzz_replay: %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        if (S_ISDIR(st.st_mode))
            n = run_dir(argv[i]);
        else if (ends_with(argv[i], ".hex"))
            n = run_hex(argv[i], NULL);
        else
            n = run_file(argv[i]) ? -1 : 1;
        if (n < 0) return 1;
        printf("fuzz_replay: %s: %ld inputs\n", argv[i], n);
        total += n;
    }
    if (total == 0) {
        fprintf(stderr, "fuzz_replay: no inputs\n");
        return 1;
    }
    printf("fuzz_replay: %ld inputs replayed, no failure\n", total);
    return 0;
}
