/* resume — what the RocksDB C API lacks for surviving a failed write.
 *
 * When a WAL write fails (a full disk), RocksDB (7.8) stops taking writes
 * until DB::Resume() or a reopen, and with its default SstFileManager it
 * tries to resume by itself: every 5 s, once the disk has as much free
 * space as the largest memtable. A manual DB::Resume() meanwhile answers
 * Busy. A resume flushes every memtable holding data, which switches to a
 * new WAL; the failed WAL file is never written again and, flushed, is
 * not replayed at the next open, so the failed batch cannot reappear.
 *
 * Two traps of 7.8 (as Debian builds it, with assertions on) are handled
 * here and in ops.c:
 *
 * - When every memtable is empty at the failure, a resume flushes nothing,
 *   keeps the failed WAL and clears the error anyway (fixed upstream in
 *   9.x by resetting the writer's error flag); the next write then trips
 *   an assertion in WritableFileWriter (the writer remembers its error)
 *   and aborts the process. db_current_wal() lets ops.c see that the WAL
 *   did not change and keep refusing writes instead.
 * - The default info logger (LOG, in the database directory) trips the
 *   same assertion on its second line after a failed write to a full
 *   disk: db_set_info_log() installs one that ignores write errors.
 *
 * The C API has no way to reach the C++ objects behind its handles, so
 * this file declares the handle structs exactly as RocksDB's c.cc (7.8.3)
 * defines them: a wrapper around the C++ object. They must stay in step
 * with the RocksDB the store links (Debian's librocksdb-dev 7.8.3). */
#include "resume.h"

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/options.h>
#include <rocksdb/transaction_log.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <memory>
#include <pthread.h>
#include <string>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

/* RocksDB's own definitions (db/c.cc, 7.8.3). */
struct rocksdb_t {
    rocksdb::DB *rep;
};
struct rocksdb_options_t {
    rocksdb::Options rep;
};

namespace
{

/* A copy of a status string that rocksdb_free() (free()) releases. */
char *status_string(const rocksdb::Status &st)
{
    std::string m = st.ToString();
    char *out = static_cast<char *>(std::malloc(m.size() + 1));
    if (out) std::memcpy(out, m.c_str(), m.size() + 1);
    return out;
}

/* RocksDB's info log, one write(2) per line, errors ignored: a full disk
 * loses log lines, never the process. */
class StoreLogger : public rocksdb::Logger
{
  public:
    StoreLogger(int fd) : rocksdb::Logger(rocksdb::InfoLogLevel::INFO_LEVEL), fd_(fd) {}
    ~StoreLogger() override
    {
        ::close(fd_);
    }
    using rocksdb::Logger::Logv;
    void Logv(const char *format, va_list ap) override
    {
        char line[1024];
        struct timeval tv;
        gettimeofday(&tv, nullptr);
        struct tm t;
        localtime_r(&tv.tv_sec, &t);
        int n = std::snprintf(line, sizeof(line), "%04d/%02d/%02d-%02d:%02d:%02d.%06ld %lu ",
                              t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min,
                              t.tm_sec, static_cast<long>(tv.tv_usec),
                              static_cast<unsigned long>(pthread_self()));
        if (n < 0) return;
        size_t len = static_cast<size_t>(n);
        if (len < sizeof(line)) {
            va_list copy;
            va_copy(copy, ap);
            int m = std::vsnprintf(line + len, sizeof(line) - len, format, copy);
            va_end(copy);
            if (m > 0) len += static_cast<size_t>(m);
        }
        if (len > sizeof(line) - 1) len = sizeof(line) - 1; /* truncated */
        if (len == 0 || line[len - 1] != '\n') line[len++] = '\n';
        ssize_t w = ::write(fd_, line, len);
        (void)w; /* ignored, as RocksDB's own logger means to */
    }

  private:
    int fd_;
};

} // namespace

extern "C" char *db_resume(rocksdb_t *db, int *busy)
{
    rocksdb::Status st = db->rep->Resume();
    *busy = st.IsBusy();
    return st.ok() ? nullptr : status_string(st);
}

extern "C" int db_current_wal(rocksdb_t *db, uint64_t *number)
{
    std::unique_ptr<rocksdb::LogFile> f;
    rocksdb::Status st = db->rep->GetCurrentWalFile(&f);
    if (!st.ok() || !f) return -1;
    *number = f->LogNumber();
    return 0;
}

extern "C" int db_set_info_log(rocksdb_options_t *opt, const char *dir)
{
    /* RocksDB creates the directory at open; the log comes first. */
    if (::mkdir(dir, 0755) != 0 && errno != EEXIST) return -1;
    std::string log = std::string(dir) + "/LOG";
    struct stat st;
    if (::stat(log.c_str(), &st) == 0) {
        struct timeval tv;
        gettimeofday(&tv, nullptr);
        std::string old = log + ".old." +
                          std::to_string(static_cast<long long>(tv.tv_sec) * 1000000 + tv.tv_usec);
        /* RocksDB deletes old logs beyond keep_log_file_num by this name. */
        if (::rename(log.c_str(), old.c_str()) != 0) return -1;
    }
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    try {
        opt->rep.info_log = std::make_shared<StoreLogger>(fd);
    } catch (...) {
        ::close(fd);
        return -1;
    }
    return 0;
}
