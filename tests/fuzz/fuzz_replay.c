/* fuzz_replay — runs a fuzz target's LLVMFuzzerTestOneInput on every file
 * of the given corpus directories (or on given files), without libFuzzer,
 * so that the seed and regression corpus is replayed in every ctest run
 * (see tests/fuzz/replay.cmake).
 *
 * Usage: fuzz_replay_<target> DIR|FILE...
 * Files are run in name order; names starting with '.' and non-regular
 * files are skipped. Each input is copied into a buffer of exactly its
 * size, so that a sanitizer build catches reads past the end. A missing
 * path, an unreadable file, or no input at all is a failure (exit 1): a
 * misconfigured test must not pass by replaying nothing. A broken target
 * invariant abort()s. */
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
                if (run_file(path))
                    failed = 1;
                else
                    count++;
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
        fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
        return 2;
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
