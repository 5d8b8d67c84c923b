/* store_lmdb.c: the LMDB environment behind sluice (see store_lmdb.h, store.h, DESIGN §5).
 *
 * Opens and checks the store directory, opens the named databases, checks the
 * format key, hands out read transactions and grows the map. Depends on LMDB
 * and pthreads only; writes are the writer's (writer.c).
 *
 * Locking: one pthread rwlock per store (one store per process). Every
 * transaction of this process, read or write, holds it shared; changing the
 * map size (store_grow, adopting a map another process grew) holds it
 * exclusive, because mdb_env_set_mapsize remaps the file and must not run
 * while any transaction of the process is open. The lock prefers readers so
 * that the loop thread may nest read transactions (MDB_NOTLS) without
 * deadlocking behind a waiting grow.
 *
 * Opening: what exists is opened in a read transaction; only a new (or old)
 * store takes one write transaction, on the opening thread, before any writer
 * exists, to create the databases and the format key. A read-only open of a
 * store that lacks some database treats it as empty for the life of the
 * handle (store_dbi returns 0 for it, which LMDB refuses with EINVAL).
 *
 * Map size: 256 MiB at first (address space only: the file grows with what is
 * written), or what the store already has if larger. The environment variable
 * SLUICE_MAP_SIZE (bytes, decimal) sets the initial map size exactly; it is
 * for tests of map growth and is not a user setting. */
#include "store_lmdb.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <unistd.h>

#include "steps_pending.h"
#include "wal.h"

#define STORE_MAXDBS 32      /* room for databases added later */
#define STORE_MAXREADERS 512 /* coroutines holding short read txns at once */
#define STORE_INITIAL_MAP ((size_t)256 << 20)

struct store {
  MDB_env *env;
  MDB_dbi dbi[DB_COUNT];
  int present[DB_COUNT]; /* 0: database missing in a read-only store */
  int missing;           /* how many are missing (read-only only) */
  int readonly;
  pthread_rwlock_t lock;
  char *dir;
  wal *wal; /* read-write: the write-ahead log (wal.c) */
  steps_pending *pend; /* acknowledged step records not yet in LMDB */
};

/* How many transactions this thread holds under the shared lock: a thread
 * that holds one cannot take the lock exclusive (it would wait for itself). */
static __thread int held_shared;

static const char *const db_names[DB_COUNT] = {
    [DB_META] = "meta",
    [DB_RUNS] = "runs",
    [DB_RUNS_BY_TIME] = "runs_by_time",
    [DB_STEPS] = "steps",
    [DB_SCHEDULES] = "schedules",
    [DB_EVENTS] = "events",
    [DB_STREAMS] = "stream_index",
    [DB_CONSUMERS] = "consumers",
    [DB_SENDS] = "sends",
    [DB_ACTIVE] = "active_runs",
    [DB_RUNS_BY_NS] = "runs_by_ns",
    [DB_RUNS_BY_PIPELINE] = "runs_by_pipeline",
    [DB_RUNS_BY_STATUS] = "runs_by_status",
    [DB_API_KEYS] = "api_keys",
    [DB_NAMESPACES] = "namespaces",
    [DB_QUOTAS] = "quotas",
    [DB_IDEMPOTENCY] = "idempotency",
    [DB_LOGS] = "logs",
    [DB_STEP_LOG] = "step_log",
    [DB_STEP_HEADS] = "step_heads",
};

static void seterr(char *err, size_t errsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errsz, const char *fmt, ...) {
  if (!err || !errsz) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errsz, fmt, ap);
  va_end(ap);
}

const char *store_status_code(int status) {
  switch (status) {
    case STORE_OK: return "OK";
    case STORE_ENOTFOUND: return "ENOTFOUND";
    case STORE_EBADSTORE: return "EBADSTORE";
    case STORE_EACCES: return "EACCES";
    case STORE_EFULL: return "EFULL";
    case STORE_EINVAL: return "EINVAL";
    default: return "EIO";
  }
}

int store_status(int rc) {
  switch (rc) {
    case 0:
      return STORE_OK;
    case ENOSPC:
    case EDQUOT:
      return STORE_EFULL;
    case EACCES:
    case EROFS:
    case EPERM:
      return STORE_EACCES;
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
      return STORE_EBADSTORE;
    case MDB_NOTFOUND:
      return STORE_ENOTFOUND;
    default:
      return STORE_EIO;
  }
}

const char *store_db_name(int db) {
  if (db < 0 || db >= DB_COUNT) return "?";
  return db_names[db];
}

const char *store_dir(const store *s) { return s->dir; }
wal *store_wal(store *s) { return s->wal; }
steps_pending *store_pending(store *s) { return s->pend; }
MDB_env *store_env(store *s) { return s->env; }

/* A database missing from a read-only store has handle 0 (LMDB's free-page
 * DB, which LMDB refuses for user operations with EINVAL); store_get and
 * store_scan treat it as empty. */
MDB_dbi store_dbi(const store *s, int db) {
  if (db < 0 || db >= DB_COUNT || !s->present[db]) return 0;
  return s->dbi[db];
}

/* ---- locking ---------------------------------------------------------- */

static void lock_shared(store *s) {
  pthread_rwlock_rdlock(&s->lock);
  held_shared++;
}

static void unlock_shared(store *s) {
  held_shared--;
  pthread_rwlock_unlock(&s->lock);
}

/* The address and length of this process's mapping of data.mdb (LMDB
 * does not give its address: me_mapaddr is only set for MDB_FIXEDMAP),
 * found in /proc/self/maps by the file's device and inode. 0 or an errno
 * (ENOENT: not mapped). */
static int map_of(store *s, char **addr, size_t *len) {
  mdb_filehandle_t fd;
  struct stat st;
  if (mdb_env_get_fd(s->env, &fd) != 0 || fstat(fd, &st) != 0) return EBADF;
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) return errno;
  char line[4096];
  int rc = ENOENT;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi, off, ino;
    unsigned maj, mnr;
    if (sscanf(line, "%lx-%lx %*s %lx %x:%x %lu", &lo, &hi, &off, &maj, &mnr, &ino) == 6 &&
        ino == (unsigned long)st.st_ino && maj == major(st.st_dev) && mnr == minor(st.st_dev) &&
        off == 0) {
      *addr = (char *)lo;
      *len = hi - lo;
      rc = 0;
      break;
    }
  }
  fclose(f);
  return rc;
}

int store_release_pages(store *s, char *err, size_t errsz) {
  MDB_envinfo info;
  MDB_stat st;
  char *addr = NULL;
  size_t maplen = 0;
  lock_shared(s); /* no remap meanwhile (store_grow holds it exclusively) */
  int rc = mdb_env_info(s->env, &info);
  if (!rc) rc = mdb_env_stat(s->env, &st);
  int e = rc ? 0 : map_of(s, &addr, &maplen);
  if (!rc && !e) {
    size_t len = ((size_t)info.me_last_pgno + 1) * st.ms_psize;
    if (len > maplen) len = maplen;
    /* a read-only shared file mapping (no MDB_WRITEMAP): the pages are read
     * again from the page cache at the next access, nothing is lost */
    if (madvise(addr, len, MADV_DONTNEED) != 0) e = errno;
  }
  unlock_shared(s);
  if (rc || e) {
    seterr(err, errsz, "releasing the pages of store %s: %s", s->dir,
           rc ? mdb_strerror(rc) : strerror(e));
    return STORE_EIO;
  }
  return 0;
}

/* Another process grew the map past ours: adopt its size. Needs no
 * transaction open in the process, hence the exclusive lock. Returns an
 * LMDB code; EDEADLK if this thread holds a transaction itself. */
static int adopt_mapsize(store *s) {
  if (held_shared > 0) return EDEADLK;
  pthread_rwlock_wrlock(&s->lock);
  int rc = mdb_env_set_mapsize(s->env, 0);
  pthread_rwlock_unlock(&s->lock);
  return rc;
}

/* Begins a transaction under the shared lock, adopting a resized map. */
static int txn_begin_locked(store *s, unsigned flags, MDB_txn **txn) {
  for (int tries = 0;; tries++) {
    lock_shared(s);
    int rc = mdb_txn_begin(s->env, NULL, flags, txn);
    if (rc == 0) return 0;
    unlock_shared(s);
    if (rc != MDB_MAP_RESIZED || tries >= 8) return rc;
    rc = adopt_mapsize(s);
    if (rc) return rc == EDEADLK ? MDB_MAP_RESIZED : rc;
  }
}

/* ---- opening ---------------------------------------------------------- */

/* The parent directory of dir ("." if none), in buf. */
static const char *parent_of(const char *dir, char *buf, size_t bufsz) {
  size_t n = strlen(dir);
  while (n > 1 && dir[n - 1] == '/') n--; /* "st/" is "st" */
  while (n > 0 && dir[n - 1] != '/') n--;
  while (n > 1 && dir[n - 1] == '/') n--;
  if (n == 0) return ".";
  snprintf(buf, bufsz, "%.*s", (int)n, dir);
  return buf;
}

/* Creates dir itself with mode 0755, not its parents: a typo in --store
 * (/nonexistent/dir/st) is refused instead of building a tree somewhere.
 * Returns 0 or errno (ENOENT: the parent does not exist). */
static int make_dir(const char *dir) {
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) return errno;
  struct stat st;
  if (stat(dir, &st) != 0) return errno;
  if (!S_ISDIR(st.st_mode)) return ENOTDIR;
  return 0;
}

/* Does dir hold anything but a store's own files (LMDB's, the writer lock, the
 * control socket)? */
static int dir_has_foreign_files(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return 0; /* mdb_env_open reports the real error */
  int found = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    /* a store's own files: another process may be creating this store now
     * (data.mdb appears between our stat of it and this scan) */
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
        !strcmp(e->d_name, "lock.mdb") || !strcmp(e->d_name, "data.mdb") ||
        !strcmp(e->d_name, "writer.lock") || !strncmp(e->d_name, "control.sock", 12) ||
        !strcmp(e->d_name, WAL_FILE) || !strncmp(e->d_name, WAL_FILE ".tmp.", 8))
      continue;
    found = 1;
    break;
  }
  closedir(d);
  return found;
}

/* LMDB maps lock.mdb after making it a sparse file; on a full disk the first
 * touch of an unbacked page is a SIGBUS, not an error. Allocating its blocks
 * first turns that into ENOSPC here. A new lock file gets room for more than
 * STORE_MAXREADERS slots (LMDB sizes its reader table by a bigger file). An
 * existing one keeps its size. Returns 0 or errno (ENOSPC/EDQUOT only: any
 * other trouble is left for mdb_env_open to report). */
static int reserve_lockfile(const char *dir) {
  size_t dl = strlen(dir);
  char *p = malloc(dl + sizeof "/lock.mdb");
  if (!p) abort();
  memcpy(p, dir, dl);
  memcpy(p + dl, "/lock.mdb", sizeof "/lock.mdb");
  int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  free(p);
  if (fd < 0) return 0;
  struct stat st;
  int rc = 0;
  if (fstat(fd, &st) == 0) {
    off_t len = st.st_size > 0 ? st.st_size : (off_t)64 << 10;
    rc = posix_fallocate(fd, 0, len);
  }
  close(fd);
  return rc == ENOSPC || rc == EDQUOT ? rc : 0;
}

/* Is dir/data.mdb an empty file (a store being created)? */
static int data_is_empty(const char *dir) {
  char p[4096];
  struct stat st;
  snprintf(p, sizeof p, "%s/data.mdb", dir);
  return stat(p, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0;
}

/* LMDB reports a short write as EIO, which is how a full disk usually shows
 * (the write fills what is left). With next to no space left, say so. */
static int disk_nearly_full(const char *dir) {
  struct statvfs v;
  if (statvfs(dir, &v) != 0) return 0;
  return (uint64_t)v.f_bavail * v.f_frsize < ((uint64_t)4 << 20);
}

static int open_error(int rc, const char *dir, const char *doing, char *err, size_t errsz) {
  if (rc == EIO && disk_nearly_full(dir)) rc = ENOSPC;
  int st = store_status(rc);
  switch (st) {
    case STORE_EBADSTORE:
      seterr(err, errsz,
             "%s is not a sluice store (not an LMDB environment: %s): pass --store with "
             "another directory",
             dir, mdb_strerror(rc));
      break;
    case STORE_EACCES:
      if (strcmp(doing, "opening read-only") == 0) {
        /* LMDB readers need to write lock.mdb too */
        seterr(err, errsz,
               "store %s is not accessible (%s): reading it needs read access to the "
               "directory and write access to its lock.mdb; fix its permissions",
               dir, mdb_strerror(rc));
      } else {
        seterr(err, errsz,
               "store %s is read-only (%s): fix its permissions or pass --store with a "
               "writable directory",
               dir, mdb_strerror(rc));
      }
      break;
    case STORE_EFULL:
      seterr(err, errsz, "disk full (%s) %s %s: free space and retry", mdb_strerror(rc),
             doing, dir);
      break;
    default:
      seterr(err, errsz, "%s store %s: %s", doing, dir, mdb_strerror(rc));
      break;
  }
  return st;
}

/* Parses the format value: decimal digits only. Returns -1 if unreadable. */
static long parse_format(const MDB_val *v) {
  if (v->mv_size == 0 || v->mv_size > 9) return -1;
  long n = 0;
  const char *p = v->mv_data;
  for (size_t i = 0; i < v->mv_size; i++) {
    if (p[i] < '0' || p[i] > '9') return -1;
    n = n * 10 + (p[i] - '0');
  }
  return n;
}

/* Checks the format key in txn (meta must be open). *have tells whether it
 * exists and is the current format (2: it is older, 1: current). Returns 0
 * or a status with err. */
static int check_format(store *s, MDB_txn *txn, int *have, char *err, size_t errsz) {
  MDB_val k = {6, "format"}, v;
  int rc = mdb_get(txn, s->dbi[DB_META], &k, &v);
  if (rc == MDB_NOTFOUND) {
    *have = 0;
    return 0;
  }
  if (rc) return open_error(rc, s->dir, "reading", err, errsz);
  *have = 1;
  long f = parse_format(&v);
  if (f < 0) {
    seterr(err, errsz,
           "store %s has an unreadable format key (%.*s): it was not written by sluice; "
           "pass --store with another directory",
           s->dir, (int)(v.mv_size > 32 ? 32 : v.mv_size), (const char *)v.mv_data);
    return STORE_EBADSTORE;
  }
  if (f > STORE_FORMAT_VERSION) {
    seterr(err, errsz, "store %s has format %ld, this sluice understands up to %d: upgrade sluice",
           s->dir, f, STORE_FORMAT_VERSION);
    return STORE_EBADSTORE;
  }
  if (f < STORE_FORMAT_VERSION) *have = 2; /* readable as it is; marked current by a write open */
  return 0;
}

/* Opens what exists with a read transaction first (no writer lock taken, so
 * opening never waits for another process's commit); only a new or old store
 * needs the write transaction that creates databases and the format key. */
static int open_dbs(store *s, int *wrote, char *err, size_t errsz) {
  *wrote = 0;
  MDB_txn *txn;
  int rc = txn_begin_locked(s, MDB_RDONLY, &txn);
  if (rc) return open_error(rc, s->dir, "reading", err, errsz);
  s->missing = 0;
  for (int i = 0; i < DB_COUNT; i++) {
    rc = mdb_dbi_open(txn, db_names[i], 0, &s->dbi[i]);
    if (rc == 0) {
      s->present[i] = 1;
    } else if (rc == MDB_NOTFOUND) {
      s->present[i] = 0;
      s->missing++;
    } else {
      mdb_txn_abort(txn);
      unlock_shared(s);
      return open_error(rc, s->dir, "opening", err, errsz);
    }
  }
  int have_format = 0;
  if (s->present[DB_META]) {
    int st = check_format(s, txn, &have_format, err, errsz);
    if (st) {
      mdb_txn_abort(txn);
      unlock_shared(s);
      return st;
    }
  }
  /* committing a read txn keeps the handles it opened */
  rc = mdb_txn_commit(txn);
  unlock_shared(s);
  if (rc) return open_error(rc, s->dir, "opening", err, errsz);
  if (s->readonly || (s->missing == 0 && have_format == 1)) return 0;

  rc = txn_begin_locked(s, 0, &txn);
  if (rc) return open_error(rc, s->dir, "writing", err, errsz);
  for (int i = 0; i < DB_COUNT && rc == 0; i++) {
    if (!s->present[i]) rc = mdb_dbi_open(txn, db_names[i], MDB_CREATE, &s->dbi[i]);
  }
  if (rc == 0) {
    /* another process may have written it since our read */
    int st = check_format(s, txn, &have_format, err, errsz);
    if (st) {
      mdb_txn_abort(txn);
      unlock_shared(s);
      return st;
    }
    /* format 1 to 2: the steps it has stay where they are (records_steps.c
     * reads them as a store whose step log is empty); the mark keeps an
     * older sluice, which would not read the log, from opening it */
    if (have_format != 1) {
      char buf[16];
      int n = snprintf(buf, sizeof buf, "%d", STORE_FORMAT_VERSION);
      MDB_val k = {6, "format"}, v = {(size_t)n, buf};
      rc = mdb_put(txn, s->dbi[DB_META], &k, &v, 0);
    }
  }
  if (rc) {
    mdb_txn_abort(txn);
  } else {
    rc = mdb_txn_commit(txn);
  }
  unlock_shared(s);
  if (rc) return open_error(rc, s->dir, "writing", err, errsz);
  *wrote = 1;
  for (int i = 0; i < DB_COUNT; i++) s->present[i] = 1;
  s->missing = 0;
  return 0;
}

static int set_initial_mapsize(store *s, char *err, size_t errsz) {
  size_t want = STORE_INITIAL_MAP;
  int exact = 0;
  const char *env = getenv("SLUICE_MAP_SIZE");
  if (env && *env) {
    char *end;
    unsigned long long v = strtoull(env, &end, 10);
    if (*end == '\0' && v > 0) {
      want = (size_t)v;
      exact = 1;
    }
  }
  MDB_envinfo info;
  mdb_env_info(s->env, &info);
  if (!exact && info.me_mapsize >= want) return 0; /* keep a map already grown */
  /* no transaction is open yet: safe without the lock */
  int rc = mdb_env_set_mapsize(s->env, want);
  if (rc) return open_error(rc, s->dir, "sizing", err, errsz);
  return 0;
}

/* store_open's own flag: the read-write open that applies a dead lazy
 * writer's events has been tried */
#define OPEN_APPLIED 0x100

int store_open(store **out, const char *dir, int flags, char *err, size_t errsz) {
  *out = NULL;
  if (err && errsz) err[0] = '\0';
  int ro = (flags & STORE_READONLY) != 0;
  struct stat st;
  if (stat(dir, &st) != 0) {
    int e = errno;
    if ((e == ENOENT || e == ENOTDIR) && ro) {
      seterr(err, errsz, "no store at %s: run a pipeline first or pass --store", dir);
      return STORE_ENOTFOUND;
    }
    if (e != ENOENT && e != ENOTDIR) {
      int status = store_status(e);
      seterr(err, errsz, "store %s is not accessible (%s): fix its permissions or pass --store",
             dir, strerror(e));
      return status;
    }
    e = e == ENOTDIR ? ENOTDIR : make_dir(dir);
    if (e == ENOENT || e == ENOTDIR) {
      char pb[4096];
      const char *parent = parent_of(dir, pb, sizeof pb);
      seterr(err, errsz,
             "cannot create store %s: its parent directory %s %s or pass --store with "
             "another directory",
             dir, parent,
             e == ENOENT ? "does not exist: create it first" : "is not a directory:");
      return STORE_EBADSTORE;
    }
    if (e) {
      int s = store_status(e);
      if (s == STORE_EACCES) {
        seterr(err, errsz,
               "cannot create store %s (%s): fix permissions or pass --store with a writable "
               "directory",
               dir, strerror(e));
      } else {
        seterr(err, errsz, "cannot create store %s (%s)", dir, strerror(e));
      }
      return s;
    }
  } else if (!S_ISDIR(st.st_mode)) {
    seterr(err, errsz,
           "%s is not a sluice store (it is a file, not a directory): pass --store with "
           "another directory",
           dir);
    return STORE_EBADSTORE;
  }

  /* data.mdb missing: a new store, unless the directory holds something else
   * (a user pointing --store at their home directory, say) */
  size_t dl = strlen(dir);
  char *data = malloc(dl + sizeof "/data.mdb");
  if (!data) abort();
  memcpy(data, dir, dl);
  memcpy(data + dl, "/data.mdb", sizeof "/data.mdb");
  int have_data = stat(data, &st) == 0;
  int data_err = have_data ? 0 : errno;
  int data_is_file = have_data && S_ISREG(st.st_mode);
  free(data);
  if (data_err && data_err != ENOENT) {
    /* a directory this user may not enter (mode 0700 of another user) hides
     * data.mdb: that is a permission problem, not a missing store */
    seterr(err, errsz,
           "store %s is not accessible (%s): %s; fix its permissions or pass --store", dir,
           strerror(data_err),
           ro ? "reading it needs access to the directory and write access to its lock.mdb"
              : "writing it needs write access to the directory and its files");
    return store_status(data_err);
  }
  if (have_data && !data_is_file) {
    seterr(err, errsz,
           "%s is not a sluice store (data.mdb is not a file): pass --store with another "
           "directory",
           dir);
    return STORE_EBADSTORE;
  }
  if (!have_data) {
    if (dir_has_foreign_files(dir)) {
      seterr(err, errsz,
             "%s is not a sluice store (it contains files but no data.mdb): pass --store "
             "with another directory",
             dir);
      return STORE_EBADSTORE;
    }
    if (ro) {
      seterr(err, errsz, "no store at %s: run a pipeline first or pass --store", dir);
      return STORE_ENOTFOUND;
    }
  }

  store *s = calloc(1, sizeof *s);
  if (!s) abort();
  s->readonly = ro;
  s->pend = pending_new();
  s->dir = strdup(dir);
  if (!s->dir) abort();
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_READER_NP);
  pthread_rwlock_init(&s->lock, &attr);
  pthread_rwlockattr_destroy(&attr);

  int rc = mdb_env_create(&s->env);
  if (rc == 0) rc = mdb_env_set_maxdbs(s->env, STORE_MAXDBS);
  if (rc == 0) rc = mdb_env_set_maxreaders(s->env, STORE_MAXREADERS);
  if (rc) {
    int status = open_error(rc, dir, "opening", err, errsz);
    store_close(s);
    return status;
  }
  if (!ro) {
    rc = reserve_lockfile(dir);
    if (rc) {
      int status = open_error(rc, dir, "opening", err, errsz);
      store_close(s);
      return status;
    }
  }
  /* The log first (wal.c): a read-write open holds its lock through
   * recovery; a read-only open of a store that needs recovering after a
   * restart has a read-write open do it first. */
  int recover = 0;
  if (ro && have_data) {
    int st2 = wal_check(dir, &recover, err, errsz);
    if (st2 == 0 && recover) {
      store *rw = NULL;
      st2 = store_open(&rw, dir, 0, err, errsz);
      store_close(rw);
      if (st2 == STORE_EACCES) {
        seterr(err, errsz,
               "store %s must be recovered after the machine restarted, which needs write "
               "access: open it once as a user who may write it (sluice serve or run)",
               dir);
      }
      recover = 0;
    }
    if (st2) {
      store_close(s);
      return st2;
    }
  } else if (!ro) {
    int st2 = wal_open(&s->wal, dir, &recover, err, errsz);
    if (st2) {
      store_close(s);
      return st2;
    }
  }
  /* default flags are the durable ones (fsync on every commit), until
   * wal_attach turns to the log's */
  rc = mdb_env_open(s->env, dir, MDB_NOTLS | (ro ? MDB_RDONLY : 0), 0644);
  if (rc && ro && data_is_empty(dir)) {
    /* another process is creating the store right now (LMDB, finding no
     * header, tries to write one through the read-only handle: EBADF) */
    store_close(s);
    seterr(err, errsz, "no store at %s: run a pipeline first or pass --store", dir);
    return STORE_ENOTFOUND;
  }
  if (rc) {
    int status = open_error(rc, dir, ro ? "opening read-only" : "opening", err, errsz);
    store_close(s);
    return status;
  }
  int status = ro ? 0 : set_initial_mapsize(s, err, errsz);
  int wrote = 0;
  if (status == 0) status = open_dbs(s, &wrote, err, errsz);
  if (status == 0 && !ro) status = wal_attach(&s->wal, s, recover, wrote, err, errsz);
  /* a read-only open beside a writer that died with deferred steps reads
   * them from the log (wal.c); acknowledged events it had not committed to
   * LMDB yet (writer.c, "Lazy commits") only a read-write open can apply:
   * one does it, as for a recovery above, and this handle opens again (a
   * user who may not write the store reads without them) */
  int lazy_left = 0;
  if (status == 0 && ro && have_data) status = wal_load_deferred(s, &lazy_left, err, errsz);
  if (status) {
    store_close(s);
    return status;
  }
  if (lazy_left && !(flags & OPEN_APPLIED)) {
    store_close(s);
    store *rw = NULL;
    int st2 = store_open(&rw, dir, 0, err, errsz);
    store_close(rw);
    if (st2 && st2 != STORE_EACCES) return st2;
    return store_open(out, dir, flags | OPEN_APPLIED, err, errsz);
  }
  *out = s;
  return 0;
}

void store_close(store *s) {
  if (!s) return;
  wal_close(s->wal); /* its pin first: a transaction of the environment */
  if (s->env) mdb_env_close(s->env);
  pending_free(s->pend);
  pthread_rwlock_destroy(&s->lock);
  free(s->dir);
  free(s);
}

/* ---- reading ---------------------------------------------------------- */

static int read_error(store *s, int rc, char *err, size_t errsz) {
  if (rc == MDB_MAP_RESIZED) {
    seterr(err, errsz,
           "reading store %s: another process grew the store while a read was open here; "
           "retry",
           s->dir);
    return STORE_EIO;
  }
  if (rc == MDB_READERS_FULL) {
    seterr(err, errsz, "reading store %s: more than %d reads open at once", s->dir,
           STORE_MAXREADERS);
    return STORE_EIO;
  }
  return open_error(rc, s->dir, "reading", err, errsz);
}

int store_read_begin(store *s, MDB_txn **txn, char *err, size_t errsz) {
  int rc = txn_begin_locked(s, MDB_RDONLY, txn);
  if (rc) {
    *txn = NULL;
    return read_error(s, rc, err, errsz);
  }
  return 0;
}

void store_read_end(store *s, MDB_txn *txn) {
  if (!txn) return;
  mdb_txn_abort(txn);
  unlock_shared(s);
}

static int bad_db(int db, char *err, size_t errsz) {
  seterr(err, errsz, "no database number %d in the store", db);
  return STORE_EIO;
}

int store_get(store *s, int db, const void *key, size_t klen, sbuf *out, int *found,
              char *err, size_t errsz) {
  sbuf_reset(out);
  *found = 0;
  if (db < 0 || db >= DB_COUNT) return bad_db(db, err, errsz);
  if (!s->present[db]) return 0;
  /* LMDB rejects such keys; none can be stored, so none is found */
  if (klen == 0 || klen > (size_t)mdb_env_get_maxkeysize(s->env)) return 0;
  MDB_txn *txn;
  int st = store_read_begin(s, &txn, err, errsz);
  if (st) return st;
  MDB_val k = {klen, (void *)key}, v;
  int rc = mdb_get(txn, s->dbi[db], &k, &v);
  if (rc == 0) {
    sbuf_add(out, v.mv_data, v.mv_size); /* copy before the txn ends */
    *found = 1;
  }
  store_read_end(s, txn);
  if (rc && rc != MDB_NOTFOUND) {
    seterr(err, errsz, "reading %s in store %s: %s", db_names[db], s->dir, mdb_strerror(rc));
    return store_status(rc);
  }
  return 0;
}

static int has_prefix(const MDB_val *k, const void *prefix, size_t plen) {
  return k->mv_size >= plen && (plen == 0 || memcmp(k->mv_data, prefix, plen) == 0);
}

/* Positions c on the last key starting with prefix, if any: the successor of
 * the prefix (drop trailing 0xff bytes, add one to the last byte) is the
 * first key past every key with the prefix; step back from it. A prefix of
 * all 0xff bytes has no successor: start from the last key. */
static int seek_last_with_prefix(MDB_cursor *c, const unsigned char *prefix, size_t plen,
                                 MDB_val *k, MDB_val *v) {
  size_t n = plen;
  while (n > 0 && prefix[n - 1] == 0xff) n--;
  if (n == 0) return mdb_cursor_get(c, k, v, MDB_LAST);
  unsigned char stackbuf[64];
  unsigned char *succ = n <= sizeof stackbuf ? stackbuf : malloc(n);
  if (!succ) abort();
  memcpy(succ, prefix, n);
  succ[n - 1]++;
  MDB_val sk = {n, succ};
  *k = sk;
  int rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
  if (succ != stackbuf) free(succ);
  if (rc == 0) return mdb_cursor_get(c, k, v, MDB_PREV);
  if (rc == MDB_NOTFOUND) return mdb_cursor_get(c, k, v, MDB_LAST);
  return rc;
}

static int bytes_cmp(const void *a, size_t an, const void *b, size_t bn) {
  int c = memcmp(a, b, an < bn ? an : bn);
  if (c != 0) return c;
  return an < bn ? -1 : an > bn ? 1 : 0;
}

int store_scan(store *s, int db, const void *prefix, size_t plen, int reverse,
               store_scan_fn fn, void *ud, char *err, size_t errsz) {
  return store_scan_from(s, db, prefix, plen, NULL, 0, reverse, fn, ud, err, errsz);
}

int store_scan_from(store *s, int db, const void *prefix, size_t plen, const void *from,
                    size_t flen, int reverse, store_scan_fn fn, void *ud, char *err,
                    size_t errsz) {
  if (db < 0 || db >= DB_COUNT) return bad_db(db, err, errsz);
  if (!s->present[db]) return 0;
  /* no stored key is longer than the limit, so none has a longer prefix */
  if (plen > (size_t)mdb_env_get_maxkeysize(s->env)) return 0;
  MDB_txn *txn;
  int st = store_read_begin(s, &txn, err, errsz);
  if (st) return st;
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, s->dbi[db], &c);
  if (rc) {
    store_read_end(s, txn);
    seterr(err, errsz, "reading %s in store %s: %s", db_names[db], s->dir, mdb_strerror(rc));
    return store_status(rc);
  }
  MDB_val k, v;
  if (reverse && from && flen > 0) {
    /* start at the last key < from */
    k.mv_size = flen;
    k.mv_data = (void *)from;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    if (rc == 0) {
      rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
    } else if (rc == MDB_NOTFOUND) {
      rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    }
  } else if (reverse) {
    rc = seek_last_with_prefix(c, prefix, plen, &k, &v);
  } else if (from && flen > 0 && bytes_cmp(from, flen, prefix, plen) > 0) {
    /* start at the first key >= from (from sorts after the prefix) */
    k.mv_size = flen;
    k.mv_data = (void *)from;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  } else if (plen == 0) {
    rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
  } else {
    k.mv_size = plen;
    k.mv_data = (void *)prefix;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  }
  int result = 0;
  while (rc == 0 && has_prefix(&k, prefix, plen)) {
    int r = fn(ud, k.mv_data, k.mv_size, v.mv_data, v.mv_size);
    if (r != 0) {
      if (r < 0) result = r;
      break;
    }
    rc = mdb_cursor_get(c, &k, &v, reverse ? MDB_PREV : MDB_NEXT);
  }
  mdb_cursor_close(c);
  store_read_end(s, txn);
  if (rc && rc != MDB_NOTFOUND) {
    seterr(err, errsz, "reading %s in store %s: %s", db_names[db], s->dir, mdb_strerror(rc));
    return store_status(rc);
  }
  return result;
}

int store_get_each(store *s, int db, size_t n, store_key_fn key, store_each_fn fn, void *ud,
                   char *err, size_t errsz) {
  if (db < 0 || db >= DB_COUNT) return bad_db(db, err, errsz);
  if (n == 0) return 0;
  MDB_txn *txn;
  int st = store_read_begin(s, &txn, err, errsz);
  if (st) return st;
  size_t maxk = (size_t)mdb_env_get_maxkeysize(s->env);
  int rc = 0, result = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    const void *kp;
    size_t kl;
    int r = key(ud, i, &kp, &kl);
    if (r == 0) {
      MDB_val k = {kl, (void *)kp}, v = {0, NULL};
      /* a database missing from a read-only store, or a key too long to
       * be stored, holds nothing */
      rc = s->present[db] && kl > 0 && kl <= maxk ? mdb_get(txn, s->dbi[db], &k, &v) : MDB_NOTFOUND;
      if (rc == MDB_NOTFOUND) {
        rc = 0;
        v.mv_data = NULL;
        v.mv_size = 0;
      }
      if (rc == 0) r = fn(ud, i, v.mv_data, v.mv_size);
    }
    if (r != 0) {
      if (r < 0) result = r;
      break;
    }
  }
  store_read_end(s, txn);
  if (rc) {
    seterr(err, errsz, "reading %s in store %s: %s", db_names[db], s->dir, mdb_strerror(rc));
    return store_status(rc);
  }
  return result;
}

/* ---- the writer's side ------------------------------------------------ */

int store_grow(store *s, char *err, size_t errsz) {
  if (held_shared > 0) {
    seterr(err, errsz, "growing store %s: a transaction of this thread is open", s->dir);
    return STORE_EIO;
  }
  pthread_rwlock_wrlock(&s->lock);
  MDB_envinfo info;
  mdb_env_info(s->env, &info);
  size_t size = info.me_mapsize;
  size_t next = size * 2;
  if (next < size) next = size; /* overflow: let LMDB fail */
  int rc = mdb_env_set_mapsize(s->env, next);
  pthread_rwlock_unlock(&s->lock);
  if (rc) {
    int st = store_status(rc);
    if (st == STORE_EFULL) {
      seterr(err, errsz, "disk full (%s) growing %s: free space and retry", mdb_strerror(rc),
             s->dir);
    } else {
      seterr(err, errsz, "growing store %s from %zu to %zu bytes: %s", s->dir, size, next,
             mdb_strerror(rc));
    }
    return st;
  }
  return 0;
}

int store_write_begin(store *s, MDB_txn **txn) {
  int rc = txn_begin_locked(s, 0, txn);
  if (rc) *txn = NULL;
  return rc;
}

int store_write_end(store *s, MDB_txn *txn, int commit) {
  int rc = 0;
  if (commit) {
    rc = mdb_txn_commit(txn); /* frees txn on failure too */
  } else {
    mdb_txn_abort(txn);
  }
  unlock_shared(s);
  return rc;
}
