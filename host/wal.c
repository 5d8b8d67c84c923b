/* wal.c: the write-ahead log in front of LMDB (issue 14): one cheap flush per
 * group commit.
 *
 * Why an acknowledgement means durable. The writer (writer.c) commits a
 * group in one LMDB write transaction W. Before W commits, the group's
 * operations are appended to STORE/wal as one record (sequence number,
 * length, CRC-32C) and the log is flushed with one fdatasync; LMDB then
 * commits with MDB_NOSYNC (pages and meta written to the page cache, no
 * flush), and only then are the batches called back. So every acknowledged
 * batch is in a flushed log record, and so is every batch a reader can see
 * (a reader sees only committed LMDB transactions). The log space is
 * written with zeros ahead of use, so its fdatasync changes no file size or
 * block map and costs a rewrite-in-place (bench/RESULTS.md, issue 14).
 *
 * What a power cut can leave of an MDB_NOSYNC file is anything: a meta page
 * naming pages that never reached the disk. So recovery never trusts LMDB's
 * state after the last checkpoint. A checkpoint: under LMDB's write lock (no
 * commit runs meanwhile, in any process), opens a read transaction on the
 * newest committed state C (the "pin") and copies data.mdb's two meta pages
 * (C's and its predecessor's); then flushes data.mdb (mdb_env_sync: C's
 * pages and metas, written before, are on disk; commits may go on meanwhile,
 * they write no page of C and the meta copies are taken); then, under the
 * lock again and only if no other checkpoint was published since, writes a
 * header slot of the log holding those meta pages, the log position where
 * records after C begin, and the boot id, and flushes the log. The pin is
 * kept until this process's next checkpoint is on disk: LMDB never reuses
 * a page that a
 * reader's snapshot can reach (mdb_page_alloc takes only pages freed before
 * the oldest reader's transaction), so C's pages stay as flushed however many
 * MDB_NOSYNC commits follow. Recovery, run at open when the machine restarted
 * since the header was written (its boot id differs: without a restart the
 * page cache holds every committed page, so LMDB is exactly its last commit):
 * writes the saved meta pages back into data.mdb before LMDB opens it, which
 * makes C current again, intact; then applies the log's records from the
 * header's position in sequence, stopping at the first that is missing, torn
 * (CRC) or from an older pass over the space (sequence), and checkpoints.
 * Every acknowledged group was flushed in a record after C, in order, so it
 * is replayed; an unacknowledged one may or may not be (store.h allows both);
 * each record is a whole group or nothing.
 *
 * Several processes write one store (`sluice keys add` beside `serve`). They
 * all go through the writer and this log, serialized by LMDB's write lock:
 * the log's tail is a record of the store itself (a key of LMDB's main
 * database, put in W), so the next writer in any process appends after
 * it. A process commits
 * only while it holds a pin (its first group checkpoints first): a pin is a
 * snapshot no newer than the newest checkpoint's (checkpoints are published
 * in order, each of a newer state than the one before), and LMDB reuses no
 * page that a snapshot at or after its oldest reader can reach, so the
 * checkpoint recovery would restore is intact whoever made it and whether or
 * not its maker still runs. Every open takes the log's lock
 * (an OFD lock on STORE/wal) around the check of the boot id, and a
 * read-write open holds it through recovery, so no process reads a store
 * that still needs recovering.
 *
 * Deferred step records (issue 14; writer.c). An LMDB commit writes a fixed
 * ~8 pages whatever it holds, so the writer that holds the log's deferring
 * lock (LOCK_DEFER, byte 2: one process at a time, taken at open or retried
 * once a second, dropped with the descriptor) does not apply its step
 * records (OP_STEP, logged as OP_DSTEP) in the group's transaction: they
 * are acknowledged after the record's flush as everything else, kept in
 * memory (steps_pending.h, merged into every read of steps) and applied in
 * one later transaction (a drain). Why nothing acknowledged is lost:
 * - The record is flushed before the acknowledgement, as above. A group
 *   with nothing else for LMDB aborts its transaction, so the log's tail is
 *   published in the log file instead (FTAIL_AT, written under LMDB's
 *   write lock before it is released: the next writer in any process takes
 *   the newer of that and the store's tail, so it appends after the record
 *   instead of over it).
 * - The first group that defers after a drain puts a mark in its own
 *   committed transaction: the position of its record. Every record with
 *   deferred steps that LMDB lacks is at or after the mark (drains apply all
 *   pending records in log order, and the drain's transaction deletes the
 *   mark, or moves it to the group's own record when that group defers too).
 * - A checkpoint of a state C with a mark sets its header's position to the
 *   mark, not to C's tail (full_seq keeps the tail): the ring keeps those
 *   records (wal_prepare counts from the header's position), and recovery
 *   after a power cut replays, from the mark up to full_seq, only the
 *   deferred step records (C has the rest of those records), then
 *   everything after, as before. A checkpoint that would wrap the ring over
 *   marked records is refused (WAL_EDRAIN): the writer drains first, or
 *   another process waits for the deferring one's drain.
 * - Same boot, the writer killed: LMDB is its last commit (the page cache),
 *   which has the mark. The next process to take the deferring lock (any
 *   read-write open, or a writer retrying it) finds the mark with no live
 *   holder, applies the deferred step records from it up to the tail (those
 *   of records whose commit never happened are past the tail: never
 *   acknowledged), and deletes it; a read-only open finds the lock free and
 *   the mark set and reads those records into its own pending set.
 * - Step records only touch the step databases, which no other operation
 *   writes, so applying them later, or after the rest of their records at
 *   recovery, gives the same state as in order; among themselves they stay
 *   in log order. Only the lock holder defers, so the mark is its alone;
 *   other writer processes apply their steps as before, and another
 *   process's checkpoint keeps the holder's records through the mark in
 *   LMDB. A record is checked when deferred (records_step_valid) so that a
 *   drain fails only as a commit can (map full: grown and retried).
 * tests/c/test_powercut.c writes step-only batches among the others (it
 * fails when recovery skips the records before full_seq), and
 * tests/c/test_defer.c kills a deferring writer.
 *
 * Lazy commits (writer.c has the rules): the deferring lock's holder
 * acknowledges groups of events after their record's flush and keeps
 * applying the next ones in one open transaction (it holds LMDB's write
 * lock throughout) and publishes no tail for them. So the valid records
 * after LMDB's own tail are deferred steps alone (the mark's), a dead lazy
 * writer's groups, or a group that died between flush and commit (never
 * acknowledged): apply_lazy applies all but the deferred steps, walking to
 * the records' end, in the first write transaction of whoever takes the
 * deferring lock next or writes without it (before it places its own
 * record); a checkpoint names its pinned state's own tail, never the file's
 * copy, so recovery after a power cut replays them; and wal_prepare does
 * not checkpoint inside a transaction holding acknowledged groups
 * (WAL_ECOMMIT). tests/c/test_lazy.c kills a lazy
 * writer, alone and beside another writer process, and restarts.
 *
 * Layout: two header slots of 2 KiB at 0 and 2048 (the newer valid one by
 * header sequence counts: a torn write of one leaves the other), then the
 * records, a ring from 4096 (FIRST) to the capacity. A record that would
 * not leave room for one more header before the capacity goes to FIRST, and
 * a wrap mark (a header with its own sequence number and no payload) at its
 * place tells recovery to go on there; neither is flushed without the
 * other. Records never overwrite those after the newest checkpoint: when
 * the ring is full, the group checkpoints first and starts again at FIRST.
 * Integers are native-endian.
 * A new log is 68 KiB; the checkpoint thread writes zeros ahead of the tail
 * (a chunk that doubles up to 4 MiB) and flushes them before the writer
 * gets there, so a store that writes little keeps a small log and a
 * group's flush finds its blocks allocated. Zeros are written only beyond
 * the file's end, under a lock on the log's byte 1 (between processes) and
 * a mutex (between threads), so they never overwrite a record.
 *
 * Sizes (tests set them small with SLUICE_WAL_SIZE / SLUICE_WAL_CKPT, bytes):
 * capacity 32 MiB; a checkpoint after 8 MiB of log, or once the pages LMDB
 * freed since the pin (counted from its freelist) reach half the store's
 * data, within 4 and 32 MiB: the pin keeps them from reuse until the next
 * checkpoint, so data.mdb settles about two such amounts above its data.
 * Checkpoints run on a thread of their own (ckpt_main), unless the ring is
 * full, this process holds no pin yet, or the thread falls far behind (then
 * in the group's transaction). No boot id (/proc/sys/kernel/random/boot_id)
 * fails the open: a restart could not be told from a running store.
 * SLUICE_BOOT_ID replaces it (tests that build power-cut images).
 *
 * LMDB version: recovery writes back LMDB 0.9's meta pages (a 16-byte page
 * header, then MDB_meta: magic at 0, txnid at 128) and checkpoints read its
 * freelist records (database 0: txnid -> page count, pages). Every
 * read-write open checks mdb_version() is 0.9.x and refuses any other LMDB
 * with a message (1.0 changes the file format); each checkpoint also checks
 * the copied meta pages carry LMDB's magic and the pinned txnid. Written
 * against and tested with 0.9.24 (Debian 12). */
#include "wal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "sbuf.h"
#include "steps_pending.h"
#include "store_lmdb.h"

#define SLOT 2048
#define FIRST 4096
#define META_BYTES 512
#define REC_MAGIC 0x52574c53u /* "SLWR" */
#define WRAP_MAGIC 0x50574c53u /* "SLWP": the next record is at FIRST */
#define DEFAULT_CAPACITY ((uint64_t)32 << 20)
#define DEFAULT_CKPT_BYTES ((uint64_t)8 << 20)
#define MIN_CHUNK ((uint64_t)64 << 10)
#define MAX_CHUNK ((uint64_t)4 << 20)
/* LMDB 0.9 meta page: a 16-byte page header, then MDB_meta, whose magic is
 * at 0 and txnid at 128 (so 144 in the page; checked at each checkpoint) */
#define LMDB_META_MAGIC_AT 16
#define LMDB_META_TXNID_AT 144
#define LMDB_MAGIC 0xBEEFC0DEu

typedef struct {
  char magic[8]; /* "SLUICEWL" */
  uint32_t version;
  uint32_t psize;    /* data.mdb's page size */
  uint64_t hseq;     /* header sequence: the higher valid slot is current */
  uint64_t owner;    /* token of the store handle that checkpointed */
  uint64_t txnid;    /* the checkpoint's LMDB transaction */
  uint64_t capacity; /* records end before this offset */
  uint64_t seq;      /* the first record after the checkpoint has this seq */
  uint64_t off;      /* ... and starts here */
  char boot[48];
  unsigned char meta[2][META_BYTES]; /* data.mdb's pages 0 and 1, first bytes */
  uint32_t crc;
  /* after crc, so that a header without them (older sluice) still reads:
   * records from seq up to full_seq hold only deferred step operations
   * that the checkpoint's state lacks (the rest of them it has) */
  uint64_t full_seq;
  uint32_t crc2; /* over everything before it; else full_seq = seq */
} hdr;
_Static_assert(sizeof(hdr) <= SLOT, "a header slot holds the header");

typedef struct {
  uint32_t magic;
  uint32_t crc; /* CRC-32C of seq, len and the payload */
  uint64_t seq;
  uint64_t len;
} rec_hdr;

struct wal {
  int fd;
  int locked;
  char *dir;
  uint64_t token;
  MDB_txn *pin;       /* read transaction on this handle's newest checkpoint */
  hdr cur;            /* the newest header, as last read */
  uint64_t at_seq, at_off; /* where the group's record goes (wal_prepare) */
  uint64_t wrap_at;   /* ... and where a wrap mark goes before it (0: none) */
  uint64_t rec_off;   /* the last record written (wal_cancel) */
  uint64_t pub_seq, pub_off; /* the tail after it, for wal_publish (0: none) */
  int defer_held;     /* this process holds LOCK_DEFER: it may defer steps */
  int lazy_open;      /* the writer's txn holds acknowledged groups (wal_lazy_open) */
  int took_over;      /* wal_prepare applied a dead writer's lazy records */
  uint64_t defer_tried_us; /* when it last tried to take it */
  uint64_t capacity_default, ckpt_bytes;
  /* LMDB's freelist, read by the writer thread under the write lock (as
   * are the pin's fields): pages freed by the transactions up to
   * freed_txn, that count when the pin was taken, and the bytes of them
   * after which a checkpoint is due */
  uint64_t freed, freed_txn, pin_freed, freed_limit;
  /* the log's zero-filled length (__atomic: the writer reads it without
   * fill_mu); zeros are written under fill_mu and the log's fill lock */
  uint64_t alloc_end;
  pthread_mutex_t fill_mu;
  /* the checkpoint thread; bg_busy (a checkpoint of it in flight) is read
   * and written only under LMDB's write lock, the rest under mu */
  store *s;
  pthread_t bg;
  int bg_started, bg_busy, kicked, quit;
  uint64_t fill_to; /* a fill the writer asked for (0: none) */
  pthread_mutex_t mu;
  pthread_cond_t cond;
};

/* ---- CRC-32C ---------------------------------------------------------- */

static uint32_t crc_table[8][256];

static void crc_init(void) {
  if (crc_table[0][1]) return;
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc_table[0][i] = c;
  }
  for (int t = 1; t < 8; t++)
    for (int i = 0; i < 256; i++)
      crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const unsigned char *p,
                                                          size_t n) {
  uint64_t c64 = c;
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    c64 = __builtin_ia32_crc32di(c64, v);
    p += 8;
    n -= 8;
  }
  c = (uint32_t)c64;
  while (n--) c = __builtin_ia32_crc32qi(c, *p++);
  return c;
}
#endif

static uint32_t crc_sw(uint32_t c, const unsigned char *p, size_t n) {
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    v ^= c;
    c = crc_table[7][v & 0xff] ^ crc_table[6][(v >> 8) & 0xff] ^ crc_table[5][(v >> 16) & 0xff] ^
        crc_table[4][(v >> 24) & 0xff] ^ crc_table[3][(v >> 32) & 0xff] ^
        crc_table[2][(v >> 40) & 0xff] ^ crc_table[1][(v >> 48) & 0xff] ^ crc_table[0][v >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
  return c;
}

/* Continues a CRC-32C (start with 0). */
static uint32_t crc32c(uint32_t crc, const void *data, size_t n) {
  uint32_t c = ~crc;
#if defined(__x86_64__)
  static int hw = -1;
  if (hw < 0) hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
  if (hw) return ~crc_hw(c, data, n);
#endif
  crc_init();
  return ~crc_sw(c, data, n);
}

/* ---- small helpers ---------------------------------------------------- */

static char *join(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  char *p = malloc(a + b + 2);
  if (!p) abort();
  memcpy(p, dir, a);
  p[a] = '/';
  memcpy(p + a + 1, name, b + 1);
  return p;
}

static uint64_t env_bytes(const char *name, uint64_t dflt) {
  const char *v = getenv(name);
  if (!v || !*v) return dflt;
  char *end;
  unsigned long long n = strtoull(v, &end, 10);
  return *end == '\0' && n >= 8192 ? (uint64_t)n : dflt;
}

static void seterr(char *err, size_t errsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The id of this boot of the machine: a power cut changes it. Without one
 * a restart cannot be told from a running store (recovering one that other
 * processes have open would undo their commits), so opening fails: EIO. */
static int boot_id(char out[48]) {
  memset(out, 0, 48);
  const char *e = getenv("SLUICE_BOOT_ID");
  if (e && *e) {
    snprintf(out, 48, "%s", e);
    return 0;
  }
  int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno ? errno : EIO;
  ssize_t n = read(fd, out, 47);
  close(fd);
  while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\0')) out[--n] = '\0';
  return n > 0 ? 0 : EIO;
}

static void boot_error(const char *dir, int rc, char *err, size_t errsz) {
  seterr(err, errsz,
         "store %s: cannot read the machine's boot id (/proc/sys/kernel/random/boot_id: %s), "
         "which tells a restart after a power cut from a running store: mount /proc",
         dir, strerror(rc));
}

static int pwrite_all(int fd, const void *p, size_t n, uint64_t off) {
  const char *c = p;
  while (n > 0) {
    ssize_t w = pwrite(fd, c, n, (off_t)off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;
    c += w;
    n -= (size_t)w;
    off += (uint64_t)w;
  }
  return 0;
}

static int pread_all(int fd, void *p, size_t n, uint64_t off, size_t *got) {
  char *c = p;
  size_t done = 0;
  *got = 0;
  while (done < n) {
    ssize_t r = pread(fd, c + done, n - done, (off_t)(off + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (r == 0) break;
    done += (size_t)r;
  }
  *got = done;
  return 0;
}

/* The log's locks (OFD locks: per open file, so closing another descriptor
 * of the file in this process does not drop them): byte 0 around the boot
 * id's check and recovery (LOCK_OPEN), byte 1 while zeros are written ahead
 * of the records (LOCK_FILL: between processes; fill_mu between threads,
 * which share the descriptor). */
enum { LOCK_OPEN = 0, LOCK_FILL = 1, LOCK_DEFER = 2 };

static int lock_byte(int fd, int type, int byte) {
  struct flock fl = {0};
  fl.l_type = (short)type;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  while (fcntl(fd, F_OFD_SETLKW, &fl) != 0) {
    if (errno != EINTR) return errno;
  }
  return 0;
}

static void seterr(char *err, size_t errsz, const char *fmt, ...) {
  if (!err || !errsz) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errsz, fmt, ap);
  va_end(ap);
}

/* ---- the header ------------------------------------------------------- */

static uint32_t hdr_crc(const hdr *h) { return crc32c(0, h, offsetof(hdr, crc)); }

static int slot_valid(const hdr *h) {
  return memcmp(h->magic, "SLUICEWL", 8) == 0 && h->version == 1 && h->crc == hdr_crc(h) &&
         h->off >= FIRST && h->off <= h->capacity && h->psize >= 512 &&
         h->psize <= META_BYTES * 128;
}

/* Reads the newest valid header slot. Returns 0, EBADMSG if neither slot is
 * valid, or errno. */
static int read_header(int fd, hdr *out) {
  static __thread union {
    hdr h;
    char b[SLOT];
  } s[2];
  size_t got;
  int rc = pread_all(fd, s, sizeof s, 0, &got);
  if (rc) return rc;
  if (got < sizeof s) memset((char *)s + got, 0, sizeof s - got);
  int a = slot_valid(&s[0].h), b = slot_valid(&s[1].h);
  if (!a && !b) return EBADMSG;
  *out = a && (!b || s[0].h.hseq > s[1].h.hseq) ? s[0].h : s[1].h;
  if (out->crc2 != crc32c(0, out, offsetof(hdr, crc2)) || out->full_seq < out->seq)
    out->full_seq = out->seq;
  return 0;
}

static int write_header(int fd, hdr *h) {
  h->crc = hdr_crc(h);
  if (h->full_seq < h->seq) h->full_seq = h->seq;
  h->crc2 = crc32c(0, h, offsetof(hdr, crc2));
  int rc = pwrite_all(fd, h, sizeof *h, (h->hseq % 2) * SLOT);
  if (rc == 0 && fdatasync(fd) != 0) rc = errno;
  return rc;
}

/* ---- the tail: a record of the store ---------------------------------- */

/* In LMDB's main database, beside the named databases' records: every
 * commit rewrites its page anyway (a named database's root moves), so the
 * tail costs no page of its own, where a key of the meta database cost one
 * page per commit (a tenth of a one-event commit's). The leading NUL keeps
 * it from ever naming a database (mdb_stat -a skips such keys). */
#define TAIL_KEY "\0sluice.wal_tail"

static MDB_dbi main_dbi(MDB_txn *txn) {
  MDB_dbi d = 1; /* MAIN_DBI, which mdb_dbi_open returns for no name */
  mdb_dbi_open(txn, NULL, 0, &d);
  return d;
}

/* The tail's copy in the log file, in the unused end of the second header
 * slot: a group whose operations are all deferred step records commits no
 * LMDB transaction (that commit is what deferring saves), so its record's
 * end is published here, under LMDB's write lock (every writer process
 * holds it when it reads or writes either copy). Written after the
 * record's flush and not flushed itself: it only has to be right for the
 * processes that share the page cache; after a power cut recovery finds
 * the end by the records' sequence and writes both copies. */
#define FTAIL_AT (2 * SLOT - 64)
#define FTAIL_MAGIC 0x534c5449u
_Static_assert(sizeof(hdr) <= FTAIL_AT - SLOT, "the tail's copy lies past the second slot's header");

typedef struct {
  uint64_t seq, off, check;
} ftail;

static uint64_t ftail_check(uint64_t seq, uint64_t off) {
  return (seq * 0x9E3779B97F4A7C15ull) ^ off ^ FTAIL_MAGIC;
}

static int ftail_put(int fd, uint64_t seq, uint64_t off) {
  ftail t = {seq, off, ftail_check(seq, off)};
  return pwrite_all(fd, &t, sizeof t, FTAIL_AT);
}

/* 1 with the file's copy, 0 if it has none. */
static int ftail_get(int fd, uint64_t *seq, uint64_t *off) {
  ftail t;
  size_t got;
  if (pread_all(fd, &t, sizeof t, FTAIL_AT, &got) != 0 || got != sizeof t ||
      t.check != ftail_check(t.seq, t.off) || t.off < FIRST)
    return 0;
  *seq = t.seq;
  *off = t.off;
  return 1;
}

/* Where the next record goes: the newer of the store's tail record and the
 * log file's copy, except right after a checkpoint (no record since: same
 * sequence), where the header's position counts (it moves back to FIRST
 * when the log wraps). fd < 0: the store's record only. */
static int get_tail_fd(int fd, MDB_txn *txn, const hdr *h, uint64_t *seq, uint64_t *off) {
  MDB_val k = {sizeof TAIL_KEY - 1, TAIL_KEY}, v;
  int rc = mdb_get(txn, main_dbi(txn), &k, &v);
  if (rc == MDB_NOTFOUND) {
    *seq = h->seq;
    *off = h->off;
  } else if (rc) {
    return rc;
  } else {
    if (v.mv_size != 16) return MDB_CORRUPTED;
    memcpy(seq, v.mv_data, 8);
    memcpy(off, (char *)v.mv_data + 8, 8);
  }
  uint64_t fs, fo;
  if (fd >= 0 && ftail_get(fd, &fs, &fo) && fs > *seq && fo <= h->capacity) *seq = fs, *off = fo;
  /* the store (and the log's copy) older than the log's checkpoint */
  if (*seq < h->seq) return MDB_CORRUPTED;
  if (*seq == h->seq) *off = h->off;
  return 0;
}

static int get_tail(store *s, MDB_txn *txn, const hdr *h, uint64_t *seq, uint64_t *off) {
  wal *l = store_wal(s);
  return get_tail_fd(l ? l->fd : -1, txn, h, seq, off);
}

static int put_tail(store *s, MDB_txn *txn, uint64_t seq, uint64_t off) {
  char b[16];
  memcpy(b, &seq, 8);
  memcpy(b + 8, &off, 8);
  MDB_val k = {sizeof TAIL_KEY - 1, TAIL_KEY}, v = {16, b};
  (void)s;
  return mdb_put(txn, main_dbi(txn), &k, &v, 0);
}

/* The deferred steps' mark, also in the main database: the position (seq,
 * offset) of the oldest record whose deferred step operations may not be in
 * LMDB. Put by the deferring writer in the transaction that starts
 * deferring, deleted by the one that drains everything (writer.c). */
#define MARK_KEY "\0sluice.defer_from"

static int mark_get(MDB_txn *txn, uint64_t *seq, uint64_t *off) {
  MDB_val k = {sizeof MARK_KEY - 1, MARK_KEY}, v;
  int rc = mdb_get(txn, main_dbi(txn), &k, &v);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc) return -1;
  if (v.mv_size != 16) return -1;
  memcpy(seq, v.mv_data, 8);
  memcpy(off, (char *)v.mv_data + 8, 8);
  return 1;
}

static int mark_put(MDB_txn *txn, uint64_t seq, uint64_t off) {
  char b[16];
  memcpy(b, &seq, 8);
  memcpy(b + 8, &off, 8);
  MDB_val k = {sizeof MARK_KEY - 1, MARK_KEY}, v = {16, b};
  return mdb_put(txn, main_dbi(txn), &k, &v, 0);
}

static int mark_del(MDB_txn *txn) {
  MDB_val k = {sizeof MARK_KEY - 1, MARK_KEY};
  int rc = mdb_del(txn, main_dbi(txn), &k, NULL);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---- checkpoints ------------------------------------------------------ */

static uint64_t meta_u64(const unsigned char *m, size_t at) {
  uint64_t v;
  memcpy(&v, m + at, 8);
  return v;
}

/* Writer thread, under the write lock: adds to l->freed the pages that
 * the transactions committed since the last call freed, from LMDB's
 * freelist (its database 0: a record per transaction, keyed by its id, the
 * page count first; LMDB 0.9's layout, as mdb_stat -f reads it). They are
 * what the pin keeps from being reused: the data.mdb growth a checkpoint
 * ends. A freelist LMDB cannot read is left uncounted (the log's size still
 * brings checkpoints). */
static void count_freed(wal *l, store *s) {
  if (l->freed_txn == 0) l->freed_txn = l->cur.txnid; /* older frees: before any pin */
  MDB_txn *rt;
  if (store_read_begin(s, &rt, NULL, 0) != 0) return;
  MDB_cursor *c;
  if (mdb_cursor_open(rt, 0, &c) == 0) {
    size_t from = (size_t)l->freed_txn + 1;
    MDB_val k = {sizeof from, &from}, v;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && k.mv_size == sizeof(size_t) && v.mv_size >= sizeof(size_t)) {
      size_t id, n;
      memcpy(&id, k.mv_data, sizeof id);
      memcpy(&n, v.mv_data, sizeof n);
      l->freed += n;
      l->freed_txn = id;
      rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
  }
  store_read_end(s, rt);
}

/* Pages freed since the pin that make a checkpoint due: half the store's
 * data, within [ckpt_bytes / 2, 4 * ckpt_bytes] (4 to 32 MiB by default).
 * data.mdb then settles about two such amounts above its data (the pages
 * freed in one cycle are reused in the next), a small store stays small,
 * and a large one is not flushed more often than its size needs. */
static uint64_t freed_limit(wal *l, store *s, MDB_txn *txn) {
  MDB_stat st;
  uint64_t pages = 0, psize = 4096;
  for (int i = -2; i < DB_COUNT; i++) {
    /* LMDB's own two (its freelist and the names of the others), then ours */
    MDB_dbi d = i < 0 ? (MDB_dbi)(i + 2) : store_dbi(s, i);
    if ((i >= 0 && d < 2) || mdb_stat(txn, d, &st) != 0) continue;
    pages += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
    psize = st.ms_psize;
  }
  uint64_t v = pages * psize / 2, lo = l->ckpt_bytes / 2, hi = 4 * l->ckpt_bytes;
  return v < lo ? lo : v > hi ? hi : v;
}

/* A checkpoint in three steps (see the top): capture (under the write
 * lock: the pin and the meta pages of the newest committed state), flush of
 * data.mdb (no lock needed: commits that follow touch no page of the pin's
 * snapshot, and their meta pages are not the copies taken), publish (under
 * the write lock: the header, if no other checkpoint was published since the
 * capture). */
typedef struct {
  MDB_txn *pin;
  hdr n;          /* the header to publish, but for hseq and crc */
  uint64_t after; /* the header sequence it follows */
  uint64_t freed; /* wal.freed then */
  uint64_t freed_limit;
} capture;

/* txn: a write transaction with nothing applied yet. h: the newest header.
 * wrap: the records after it start back at FIRST, in a log of at least
 * FIRST + need bytes. */
static int ckpt_capture(wal *l, store *s, MDB_txn *txn, const hdr *h, int wrap, size_t need,
                        capture *c) {
  MDB_env *env = store_env(s);
  memset(c, 0, sizeof *c);
  /* outside the store's rwlock: the pin reads nothing, and changing the map
   * size only needs no write transaction (mdb_env_set_mapsize) */
  int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &c->pin);
  if (rc) return rc;
  uint64_t txnid = mdb_txn_id(c->pin);
  hdr *n = &c->n;
  memcpy(n->magic, "SLUICEWL", 8);
  n->version = 1;
  MDB_stat st;
  mdb_env_stat(env, &st);
  n->psize = st.ms_psize;
  mdb_filehandle_t dfd;
  rc = mdb_env_get_fd(env, &dfd);
  size_t got = 0;
  for (int i = 0; i < 2 && rc == 0; i++) {
    rc = pread_all(dfd, n->meta[i], META_BYTES, (uint64_t)i * n->psize, &got);
    if (rc == 0 && got != META_BYTES) rc = EIO;
  }
  if (rc == 0) {
    /* one meta page is the pinned transaction's: else LMDB's layout is not
     * what this file assumes, and restoring it would be wrong */
    uint32_t m0, m1;
    memcpy(&m0, n->meta[0] + LMDB_META_MAGIC_AT, 4);
    memcpy(&m1, n->meta[1] + LMDB_META_MAGIC_AT, 4);
    uint64_t t0 = meta_u64(n->meta[0], LMDB_META_TXNID_AT),
             t1 = meta_u64(n->meta[1], LMDB_META_TXNID_AT);
    if (m0 != LMDB_MAGIC || m1 != LMDB_MAGIC || (t0 > t1 ? t0 : t1) != txnid) {
      fprintf(stderr,
              "sluice: data.mdb's meta pages (txn %llu, %llu) do not match LMDB's last "
              "transaction %llu: this LMDB is not the 0.9 format wal.c knows\n",
              (unsigned long long)t0, (unsigned long long)t1, (unsigned long long)txnid);
      rc = MDB_INCOMPATIBLE;
    }
  }
  uint64_t seq = 0, off = 0, mseq = 0, moff = 0;
  /* the pinned state's own tail, not the log file's copy nor txn's: the
   * records past it that it lacks (a lazy writer that died, see the top,
   * maybe applied in txn already) are replayed after a power cut; the copy
   * is newer only by those and by records of deferred steps alone, which
   * the mark covers */
  if (rc == 0) rc = get_tail_fd(-1, c->pin, h, &seq, &off);
  /* deferred step records the pinned state lacks: replay starts at the
   * oldest of them, and the ring keeps them (wal_prepare counts from the
   * header's position); a wrap would overwrite them, so the writer drains
   * first (WAL_EDRAIN) */
  int marked = rc == 0 ? mark_get(c->pin, &mseq, &moff) : 0;
  if (marked < 0) rc = MDB_CORRUPTED;
  if (marked > 0 && mseq >= seq) marked = 0;
  if (rc == 0 && marked && wrap) rc = WAL_EDRAIN;
  n->capacity = h->capacity > l->capacity_default ? h->capacity : l->capacity_default;
  if (rc == 0 && wrap) {
    off = FIRST;
    /* the record and a wrap mark after it */
    uint64_t want =
        FIRST + ((2 * sizeof(rec_hdr) + need + MIN_CHUNK - 1) / MIN_CHUNK) * MIN_CHUNK;
    if (want > n->capacity) n->capacity = want;
  }
  if (rc) {
    mdb_txn_abort(c->pin);
    c->pin = NULL;
    return rc;
  }
  n->owner = l->token;
  n->txnid = txnid;
  n->seq = marked ? mseq : seq;
  n->off = marked ? moff : off;
  n->full_seq = seq;
  rc = boot_id(n->boot);
  if (rc) {
    mdb_txn_abort(c->pin);
    c->pin = NULL;
    return rc;
  }
  c->after = h->hseq;
  c->freed = l->freed;
  c->freed_limit = freed_limit(l, s, txn);
  return 0;
}

/* Under the write lock, after data.mdb's flush: h is the newest header now.
 * *published 0: another checkpoint came first, this one is dropped. */
static int ckpt_publish(wal *l, capture *c, const hdr *h, int *published) {
  *published = 0;
  int rc = 0;
  if (h->hseq == c->after) {
    c->n.hseq = h->hseq + 1;
    rc = write_header(l->fd, &c->n);
    if (rc == 0) {
      if (l->pin) mdb_txn_abort(l->pin);
      l->pin = c->pin;
      l->pin_freed = c->freed;
      l->freed_limit = c->freed_limit;
      l->cur = c->n;
      c->pin = NULL;
      *published = 1;
    }
  }
  if (c->pin) mdb_txn_abort(c->pin);
  c->pin = NULL;
  return rc;
}

/* All three steps under the caller's write transaction txn. */
static int checkpoint(wal *l, store *s, MDB_txn *txn, const hdr *h, int wrap, size_t need) {
  capture c;
  int rc = ckpt_capture(l, s, txn, h, wrap, need, &c);
  if (rc) return rc;
  rc = mdb_env_sync(store_env(s), 1);
  int published;
  if (rc == 0) return ckpt_publish(l, &c, h, &published);
  mdb_txn_abort(c.pin);
  return rc;
}

/* ---- zeros ahead of the records ----------------------------------------- */

/* How far ahead of a log of len bytes zeros are written: doubling up to
 * MAX_CHUNK, so a store that writes little keeps a small log. */
static uint64_t chunk_for(uint64_t len) {
  return len < MIN_CHUNK ? MIN_CHUNK : len > MAX_CHUNK ? MAX_CHUNK : len;
}

/* Writes zeros from at to to, one page per write: the page cache then holds
 * the log in pages of their own. One write of 64 KiB makes a 64 KiB folio
 * (Linux 6's large folios), and each record written into it after a flush
 * dirties the whole folio again: /proc/self/io counted 68 KiB written per
 * 3 KB record against 7 KiB (ext4 wrote back only the dirty blocks, but a
 * filesystem without per-block dirty state writes the folio). Returns 0 or
 * errno. */
static int write_zeros(int fd, uint64_t at, uint64_t to) {
  static const char zeros[4096];
  while (at < to) {
    size_t n = sizeof zeros - at % sizeof zeros;
    if (n > to - at) n = (size_t)(to - at);
    int rc = pwrite_all(fd, zeros, n, at);
    if (rc) return rc;
    at += n;
  }
  return 0;
}

/* Writes zeros from the log's end (of any process) up to to, and with
 * flush fdatasyncs them. Records are written only below the file's end, so
 * zeros written only beyond it, under the fill lock, never overwrite one. */
static int fill(wal *l, uint64_t to, int flush) {
  pthread_mutex_lock(&l->fill_mu);
  int rc = lock_byte(l->fd, F_WRLCK, LOCK_FILL);
  if (rc) {
    pthread_mutex_unlock(&l->fill_mu);
    return rc;
  }
  struct stat st;
  uint64_t at = 0, from = 0;
  if (fstat(l->fd, &st) != 0) {
    rc = errno;
  } else {
    at = from = (uint64_t)st.st_size;
  }
  if (rc == 0 && at < to) {
    rc = write_zeros(l->fd, at, to);
    if (rc == 0) at = to;
  }
  lock_byte(l->fd, F_UNLCK, LOCK_FILL);
  if (rc == 0 && flush && at > from && fdatasync(l->fd) != 0) rc = errno;
  if (rc == 0 && at > __atomic_load_n(&l->alloc_end, __ATOMIC_ACQUIRE))
    __atomic_store_n(&l->alloc_end, at, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&l->fill_mu);
  return rc;
}

/* Writer thread, in wal_append: the record's range must exist before its
 * flush. The checkpoint thread normally wrote it already (fill_ahead). */
static int ensure_space(wal *l, uint64_t end) {
  if (end <= __atomic_load_n(&l->alloc_end, __ATOMIC_ACQUIRE)) return 0;
  uint64_t to = end + chunk_for(end);
  if (to > l->cur.capacity) to = l->cur.capacity > end ? l->cur.capacity : end;
  return fill(l, to, 0); /* the group's own flush makes them durable */
}

/* The checkpoint thread's flush of data.mdb, its dirty pages written out
 * 256 KiB at a time (each written and waited for) before the flush
 * itself. Measured (issue 14, h-emit): one mdb_env_sync of the ~4 MiB a
 * checkpoint of an emit load leaves dirty held each log fdatasync that
 * overlapped it ~11 ms (0.7 ms otherwise), as the device's flush waits
 * for every write in flight; in chunks a log flush waits for one chunk.
 * The flush after it is what makes the checkpoint durable, as before.
 * SLUICE_CKPT_PACE=0: one flush, as before. */
static int paced_env_sync(store *s) {
  MDB_env *env = store_env(s);
  const char *e = getenv("SLUICE_CKPT_PACE");
  int fd = -1;
  struct stat st;
  if (!(e && e[0] == '0') && mdb_env_get_fd(env, &fd) == 0 && fstat(fd, &st) == 0) {
    const off_t chunk = 256 * 1024;
    for (off_t at = 0; at < st.st_size; at += chunk)
      if (sync_file_range(fd, at, chunk,
                          SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                              SYNC_FILE_RANGE_WAIT_AFTER) != 0)
        break; /* the flush below writes what is left and reports errors */
  }
  return mdb_env_sync(env, 1);
}

/* ---- the checkpoint thread: a checkpoint that is due but not needed yet
 * flushes data.mdb while the writer goes on committing; zeros ahead of the
 * log's tail are written and flushed there too, so that a group's flush
 * rewrites blocks in place and changes no file size ---- */

static void *ckpt_main(void *arg) {
  wal *l = arg;
  pthread_mutex_lock(&l->mu);
  for (;;) {
    while (!l->kicked && !l->fill_to && !l->quit) pthread_cond_wait(&l->cond, &l->mu);
    if (l->quit) break;
    uint64_t to = l->fill_to;
    int kicked = l->kicked;
    l->fill_to = 0;
    l->kicked = 0;
    pthread_mutex_unlock(&l->mu);
    store *s = l->s;
    if (to) {
      int frc = fill(l, to, 1);
      /* the writer writes its zeros itself then */
      if (frc) fprintf(stderr, "sluice: writing ahead in %s/" WAL_FILE ": %s\n", l->dir,
                       strerror(frc));
    }
    if (!kicked) {
      pthread_mutex_lock(&l->mu);
      continue;
    }
    MDB_txn *txn;
    capture c = {0};
    int rc = store_write_begin(s, &txn);
    if (rc == 0) {
      hdr h;
      rc = read_header(l->fd, &h);
      if (rc == 0) rc = ckpt_capture(l, s, txn, &h, 0, 0, &c);
      store_write_end(s, txn, 0);
    }
    if (rc == 0) rc = paced_env_sync(s);
    if (rc == 0) rc = store_write_begin(s, &txn);
    if (rc == 0) {
      hdr h;
      int published;
      rc = read_header(l->fd, &h);
      if (rc == 0) rc = ckpt_publish(l, &c, &h, &published);
      l->bg_busy = 0; /* under the write lock, as wal_prepare reads it */
      store_write_end(s, txn, 0);
    }
    if (c.pin) mdb_txn_abort(c.pin);
    if (rc) {
      /* the writer checkpoints itself when this one is missing */
      fprintf(stderr, "sluice: checkpointing %s: %s\n", store_dir(s), mdb_strerror(rc));
      if (store_write_begin(s, &txn) == 0) {
        l->bg_busy = 0;
        store_write_end(s, txn, 0);
      }
    }
    pthread_mutex_lock(&l->mu);
  }
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

/* Writer thread. Returns 0 or pthread_create's code. */
static int bg_start(wal *l, store *s) {
  if (l->bg_started) return 0;
  l->s = s;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&l->bg, NULL, ckpt_main, l);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc == 0) l->bg_started = 1;
  return rc;
}

/* Writer thread, under the write lock. Returns 0, or a code when the thread
 * cannot start (the caller checkpoints itself). */
static int ckpt_kick(wal *l, store *s) {
  int rc = bg_start(l, s);
  if (rc) return rc;
  l->bg_busy = 1;
  pthread_mutex_lock(&l->mu);
  l->kicked = 1;
  pthread_mutex_unlock(&l->mu);
  pthread_cond_signal(&l->cond);
  return 0;
}

static void ckpt_stop(wal *l) {
  if (!l->bg_started) return;
  pthread_mutex_lock(&l->mu);
  l->quit = 1;
  pthread_mutex_unlock(&l->mu);
  pthread_cond_signal(&l->cond);
  pthread_join(l->bg, NULL);
  l->bg_started = 0;
}

/* Writer thread: asks the checkpoint thread for zeros ahead of end once
 * less than half a chunk of them is left. */
static void fill_ahead(wal *l, store *s, uint64_t end) {
  uint64_t have = __atomic_load_n(&l->alloc_end, __ATOMIC_ACQUIRE);
  uint64_t chunk = chunk_for(have);
  if (end > l->cur.capacity || have >= l->cur.capacity || end + chunk / 2 <= have) return;
  uint64_t to = have + chunk < l->cur.capacity ? have + chunk : l->cur.capacity;
  if (bg_start(l, s) != 0) return; /* ensure_space writes them */
  pthread_mutex_lock(&l->mu);
  if (to > l->fill_to) l->fill_to = to;
  pthread_mutex_unlock(&l->mu);
  pthread_cond_signal(&l->cond);
}

static int walk(int fd, uint64_t capacity, uint64_t *seqp, uint64_t *offp, uint64_t end_seq,
                int (*fn)(void *, uint64_t, const char *, size_t), void *ud);

typedef struct {
  store *s;
  MDB_txn *txn;
  size_t applied;
} lazy_ctx;

static int lazy_rec(void *ud, uint64_t seq, const char *ops, size_t len) {
  (void)seq;
  lazy_ctx *c = ud;
  return store_apply_ops_n(c->txn, c->s, ops, len, APPLY_UNDEFERRED, &c->applied);
}

/* In txn (a write transaction, nothing of this process's applied yet): the
 * valid records after LMDB's own tail, in sequence up to the first that is
 * missing, torn or of an older pass, are groups LMDB lacks: a lazy
 * writer's (writer.c) that died with them in its open transaction (it
 * publishes no tail for them: the walk finds their end), groups of deferred
 * step records alone (the mark's business: skipped here), or a group whose
 * process died between its record's flush and its commit (never
 * acknowledged: applying it is allowed, store.h). Applies all but the
 * deferred steps and, if that was anything, puts the tail past them
 * (*applied = 1: txn must commit). A live lazy writer holds LMDB's write lock while it has such
 * records, so whoever holds txn finds only a dead one's. */
static int apply_lazy(wal *l, store *s, MDB_txn *txn, const hdr *h, int *applied) {
  *applied = 0;
  uint64_t seq, off;
  int rc = get_tail_fd(-1, txn, h, &seq, &off);
  if (rc) return rc;
  lazy_ctx c = {s, txn, 0};
  rc = walk(l->fd, h->capacity, &seq, &off, 0, lazy_rec, &c);
  if (rc) return rc;
  /* records of deferred steps alone apply nothing: their writer published
   * their end in the log file, the tail stays as it is */
  if (c.applied) {
    rc = put_tail(s, txn, seq, off);
    if (rc) return rc;
    *applied = 1;
  }
  return 0;
}

int wal_took_over(wal *l) {
  int t = l->took_over;
  l->took_over = 0;
  return t;
}

void wal_lazy_open(wal *l, int open) { l->lazy_open = open; }

int wal_prepare(wal *l, store *s, MDB_txn *txn, size_t need) {
  int rc = read_header(l->fd, &l->cur);
  if (rc) return rc == EBADMSG ? MDB_CORRUPTED : rc;
  uint64_t psize = l->cur.psize ? l->cur.psize : 4096, rec = sizeof(rec_hdr) + need;
  count_freed(l, s);
  /* a dead lazy writer's groups first: this record goes after them */
  if (!l->defer_held && !l->lazy_open) {
    int took = 0;
    rc = apply_lazy(l, s, txn, &l->cur, &took);
    if (rc) return rc;
    l->took_over |= took;
  }
  uint64_t seq, off, at;
  int mark;
  for (int pass = 0;; pass++) {
    rc = get_tail(s, txn, &l->cur, &seq, &off);
    if (rc) return rc;
    /* the records after the checkpoint: [ho, off), or once they wrapped
     * [ho, capacity) and [FIRST, off) */
    uint64_t ho = l->cur.off, cap = l->cur.capacity;
    int live = seq > l->cur.seq, wrapped = live && off < ho;
    uint64_t since = !live ? 0 : wrapped ? (cap - ho) + (off - FIRST) : off - ho;
    /* a record leaves room after it for a wrap mark; one that does not fit
     * goes to FIRST, after a mark at off (recovery follows it), but never
     * onto the records after the checkpoint: then the log is full, and a
     * checkpoint that starts it again at FIRST comes first */
    mark = !wrapped && off + rec + sizeof(rec_hdr) > cap;
    at = mark ? FIRST : off;
    int full = (wrapped || mark) && at + rec + sizeof(rec_hdr) >= ho;
    /* our pin protects the newest checkpoint, whoever made it: see the top */
    int mine = l->pin != NULL;
    uint64_t freed = (l->freed - l->pin_freed) * psize;
    int due = since >= l->ckpt_bytes || freed >= l->freed_limit;
    /* the background checkpoint falls behind: the writer waits for one */
    int behind = since >= 2 * l->ckpt_bytes || freed >= 4 * l->freed_limit;
    /* not ours, or the log is full: now; due: in the background, while the
     * current one (ours, pinned) still covers every commit */
    if (mine && due && !full && !l->bg_busy && ckpt_kick(l, s) == 0) due = 0;
    if (!(!mine || full || (due && !l->bg_busy) || behind) || pass == 2) break;
    /* txn holds acknowledged groups (a lazy writer's, or a dead one's just
     * applied): a checkpoint in it could start the ring again over them
     * (a wrap); commit first */
    if (l->lazy_open || l->took_over) return WAL_ECOMMIT;
    hdr h = l->cur;
    rc = checkpoint(l, s, txn, &h, full, need);
    if (rc) return rc;
  }
  l->at_seq = seq;
  l->at_off = at;
  l->wrap_at = mark ? off : 0;
  fill_ahead(l, s, at + rec + sizeof(rec_hdr));
  return 0;
}

int wal_append(wal *l, store *s, MDB_txn *txn, const void *payload, size_t len) {
  uint64_t off = l->at_off, seq = l->at_seq + (l->wrap_at != 0), end = off + sizeof(rec_hdr) + len;
  if (end > l->cur.capacity) return EINVAL; /* wal_prepare made room for need */
  /* the tail first: a put that fails leaves no record behind */
  int rc = put_tail(s, txn, seq + 1, end);
  if (rc) return rc;
  l->pub_seq = seq + 1;
  l->pub_off = end;
  rc = ensure_space(l, end);
  if (rc) return rc;
  if (l->wrap_at) {
    /* flushed with the record: a cut before leaves neither acknowledged */
    rec_hdr m = {WRAP_MAGIC, 0, l->at_seq, 0};
    m.crc = crc32c(0, &m.seq, 16);
    rc = pwrite_all(l->fd, &m, sizeof m, l->wrap_at);
    if (rc) return rc;
  }
  rec_hdr r = {REC_MAGIC, 0, seq, len};
  uint32_t c = crc32c(0, &r.seq, 16);
  r.crc = crc32c(c, payload, len);
  struct iovec iov[2] = {{&r, sizeof r}, {(void *)payload, len}};
  size_t total = sizeof r + len, done = 0;
  while (done < total) {
    ssize_t w = pwritev(l->fd, iov, 2, (off_t)(off + done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      rc = w < 0 ? errno : EIO;
      break;
    }
    done += (size_t)w;
    if (done < total) {
      /* short write: go on with the rest as one plain write */
      sbuf rest = SBUF_INIT;
      if (done < sizeof r) sbuf_add(&rest, (char *)&r + done, sizeof r - done);
      size_t pdone = done > sizeof r ? done - sizeof r : 0;
      sbuf_add(&rest, (const char *)payload + pdone, len - pdone);
      rc = pwrite_all(l->fd, rest.data, rest.len, off + done);
      sbuf_free(&rest);
      done = total;
    }
  }
  l->rec_off = off;
  if (rc == 0 && fdatasync(l->fd) != 0) rc = errno;
  if (rc) wal_cancel(l);
  return rc;
}

void wal_next(const wal *l, uint64_t *seq, uint64_t *off) {
  *seq = l->at_seq + (l->wrap_at != 0);
  *off = l->at_off;
}

int wal_publish(wal *l) {
  /* only a group that commits nothing publishes: a committed one's tail is
   * LMDB's (get_tail takes the newer), and a copy written after its commit
   * (the lock released) could overwrite a newer one */
  if (!l->pub_seq) return 0;
  int rc = ftail_put(l->fd, l->pub_seq, l->pub_off);
  l->pub_seq = 0;
  return rc;
}

void wal_cancel(wal *l) {
  l->pub_seq = 0;
  static const char zeros[sizeof(rec_hdr)];
  if (pwrite_all(l->fd, zeros, sizeof zeros, l->rec_off) == 0 && fdatasync(l->fd) == 0) return;
  /* a record that could not be retracted would be replayed after a power
   * cut, though its batches were reported failed */
  fprintf(stderr,
          "sluice: cannot retract a log record in %s/" WAL_FILE " (%s): stopping so that a "
          "failed write is never replayed; check the disk\n",
          l->dir, strerror(errno));
  abort();
}

int wal_checkpoint_now(wal *l, store *s) {
  MDB_txn *txn;
  int rc = store_write_begin(s, &txn);
  if (rc) return rc;
  rc = read_header(l->fd, &l->cur);
  if (rc == EBADMSG) rc = MDB_CORRUPTED;
  if (rc == 0) {
    hdr h = l->cur;
    rc = checkpoint(l, s, txn, &h, 0, 0);
  }
  store_write_end(s, txn, 0);
  return rc;
}

/* ---- opening ---------------------------------------------------------- */

static wal *wal_new(const char *dir) {
  wal *l = calloc(1, sizeof *l);
  if (!l) abort();
  l->fd = -1;
  l->dir = strdup(dir);
  if (!l->dir) abort();
  if (getrandom(&l->token, sizeof l->token, 0) != (ssize_t)sizeof l->token)
    l->token = ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)l;
  l->capacity_default = env_bytes("SLUICE_WAL_SIZE", DEFAULT_CAPACITY);
  l->ckpt_bytes = env_bytes("SLUICE_WAL_CKPT", DEFAULT_CKPT_BYTES);
  l->freed_limit = l->ckpt_bytes / 2;
  pthread_mutex_init(&l->mu, NULL);
  pthread_mutex_init(&l->fill_mu, NULL);
  pthread_cond_init(&l->cond, NULL);
  return l;
}

static int status_of(int e) {
  if (e == EBADMSG || e == MDB_CORRUPTED || e == MDB_INCOMPATIBLE) return STORE_EBADSTORE;
  return store_status(e);
}

int wal_check(const char *dir, int *recover, char *err, size_t errsz) {
  *recover = 0;
  char *p = join(dir, WAL_FILE);
  int fd = open(p, O_RDONLY | O_CLOEXEC);
  free(p);
  if (fd < 0) {
    if (errno == ENOENT) return 0;
    seterr(err, errsz, "store %s: opening its log: %s", dir, strerror(errno));
    return store_status(errno);
  }
  hdr h;
  int rc = lock_byte(fd, F_RDLCK, LOCK_OPEN);
  if (rc == 0) rc = read_header(fd, &h);
  close(fd);
  if (rc) {
    seterr(err, errsz, "store %s: its log %s/" WAL_FILE " is unreadable (%s)", dir, dir,
           rc == EBADMSG ? "no valid header" : strerror(rc));
    return status_of(rc);
  }
  char boot[48];
  rc = boot_id(boot);
  if (rc) {
    boot_error(dir, rc, err, errsz);
    return STORE_EIO;
  }
  *recover = strncmp(boot, h.boot, sizeof boot) != 0;
  return 0;
}

/* Puts the checkpoint's meta pages back: LMDB will open at that state. */
static int restore_metas(const char *dir, const hdr *h) {
  char *p = join(dir, "data.mdb");
  int fd = open(p, O_RDWR | O_CLOEXEC);
  free(p);
  if (fd < 0) return errno;
  int rc = 0;
  for (int i = 0; i < 2 && rc == 0; i++)
    rc = pwrite_all(fd, h->meta[i], META_BYTES, (uint64_t)i * h->psize);
  if (rc == 0 && fdatasync(fd) != 0) rc = errno;
  close(fd);
  return rc;
}

/* Recovery writes LMDB 0.9's meta pages back, and checkpoints read its
 * freelist: another LMDB's layout (1.0 changes the file format) would be
 * misread. Refused with EIO. */
static int lmdb_known(const char *dir, char *err, size_t errsz) {
  int major, minor, patch;
  const char *v = mdb_version(&major, &minor, &patch);
  if (major == 0 && minor == 9) return 0;
  seterr(err, errsz,
         "store %s: this sluice runs with %s, but its write-ahead log (host/wal.c) knows only "
         "LMDB 0.9's meta page layout: run it with liblmdb 0.9 (Debian 12's liblmdb0)",
         dir, v ? v : "an unknown LMDB");
  return STORE_EIO;
}

int wal_open(wal **out, const char *dir, int *recover, char *err, size_t errsz) {
  *out = NULL;
  *recover = 0;
  int known = lmdb_known(dir, err, errsz);
  if (known) return known;
  char *p = join(dir, WAL_FILE);
  int fd = open(p, O_RDWR | O_CLOEXEC);
  free(p);
  if (fd < 0) {
    if (errno == ENOENT) return 0;
    int e = errno;
    if (store_status(e) == STORE_EACCES) {
      seterr(err, errsz,
             "store %s is read-only (%s): fix its permissions or pass --store with a "
             "writable directory",
             dir, strerror(e));
    } else {
      seterr(err, errsz, "store %s: opening its log for writing: %s", dir, strerror(e));
    }
    return store_status(e);
  }
  wal *l = wal_new(dir);
  l->fd = fd;
  int rc = lock_byte(fd, F_WRLCK, LOCK_OPEN);
  if (rc == 0) l->locked = 1;
  if (rc == 0) rc = read_header(fd, &l->cur);
  if (rc) {
    seterr(err, errsz, "store %s: its log %s/" WAL_FILE " is unreadable (%s)", dir, dir,
           rc == EBADMSG ? "no valid header" : strerror(rc));
    wal_close(l);
    return status_of(rc);
  }
  char boot[48];
  rc = boot_id(boot);
  if (rc) {
    boot_error(dir, rc, err, errsz);
    wal_close(l);
    return STORE_EIO;
  }
  if (strncmp(boot, l->cur.boot, sizeof boot) != 0) {
    rc = restore_metas(dir, &l->cur);
    if (rc) {
      seterr(err, errsz, "store %s: recovering after a restart (restoring data.mdb's last "
             "checkpoint): %s", dir, strerror(rc));
      wal_close(l);
      return store_status(rc);
    }
    *recover = 1;
  }
  struct stat st;
  if (fstat(fd, &st) == 0) l->alloc_end = (uint64_t)st.st_size;
  *out = l;
  return 0;
}

/* Creates the log of a store that has none, its header a checkpoint of the
 * current state (durable: without a log every commit was LMDB's durable
 * one). Built as a temporary file and linked into place, so a crash leaves
 * either no log or a whole one; another process may have made it first. */
static int create_log(wal *l, store *s) {
  MDB_txn *txn;
  int rc = store_write_begin(s, &txn);
  if (rc) return rc;
  char *path = join(l->dir, WAL_FILE);
  char name[64];
  snprintf(name, sizeof name, WAL_FILE ".tmp.%ld", (long)getpid());
  char *tmp = join(l->dir, name);
  hdr h;
  memset(&h, 0, sizeof h);
  h.capacity = l->capacity_default;
  h.seq = 1;
  h.off = FIRST;
  /* a store whose log went missing (data.mdb copied alone) still has the
   * tail of it: the new log's records go on from its sequence but at FIRST
   * (recovery finds them either way; the old offset could be 60 MiB in,
   * all of it zeros to write first) */
  uint64_t tseq, toff;
  rc = get_tail(s, txn, &h, &tseq, &toff);
  if (rc == 0) h.seq = tseq;
  int fd = rc ? -1 : open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (rc == 0 && fd < 0) rc = errno;
  if (rc == 0) {
    /* a small start: the checkpoint thread writes more ahead as it is used */
    rc = write_zeros(fd, 0, FIRST + MIN_CHUNK);
  }
  if (rc == 0) {
    l->fd = fd;
    rc = checkpoint(l, s, txn, &h, 0, 0); /* writes hseq 1, flushes */
    l->fd = -1;
  }
  int linked = 0;
  if (rc == 0) {
    if (link(tmp, path) == 0) {
      linked = 1;
    } else if (errno != EEXIST) {
      rc = errno;
    }
  }
  if (fd >= 0) {
    unlink(tmp);
    close(fd);
  }
  if (rc == 0 && linked) {
    int dfd = open(l->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) rc = errno;
    if (dfd >= 0) close(dfd);
  }
  if (rc == 0) {
    l->fd = open(path, O_RDWR | O_CLOEXEC);
    if (l->fd < 0) rc = errno;
    struct stat st;
    if (rc == 0 && fstat(l->fd, &st) == 0) l->alloc_end = (uint64_t)st.st_size;
  }
  if (!linked && l->pin) {
    /* someone else's log: this pin is no checkpoint of it */
    mdb_txn_abort(l->pin);
    l->pin = NULL;
  }
  store_write_end(s, txn, 0);
  free(path);
  free(tmp);
  return rc;
}

/* Calls fn(ud, seq, ops, len) for each record from (*seq, *off) in
 * sequence, stopping at the first that is missing, torn (CRC) or from an
 * older pass over the space, or before end_seq (0: no such bound). *seq and
 * *off end where it stopped. fn returns 0 or a code (returned). */
typedef int (*walk_fn)(void *ud, uint64_t seq, const char *ops, size_t len);

static int walk(int fd, uint64_t capacity, uint64_t *seqp, uint64_t *offp, uint64_t end_seq,
                walk_fn fn, void *ud) {
  sbuf buf = SBUF_INIT;
  uint64_t seq = *seqp, off = *offp;
  int rc = 0;
  while (rc == 0 && (!end_seq || seq < end_seq)) {
    rec_hdr r;
    size_t got;
    if (off + sizeof r > capacity) break;
    rc = pread_all(fd, &r, sizeof r, off, &got);
    if (rc == 0 && got == sizeof r && r.magic == WRAP_MAGIC && r.seq == seq && r.len == 0 &&
        r.crc == crc32c(0, &r.seq, 16)) {
      off = FIRST; /* the next record is at the start */
      seq++;
      continue;
    }
    if (rc || got < sizeof r || r.magic != REC_MAGIC || r.seq != seq ||
        r.len > capacity - off - sizeof r)
      break;
    sbuf_reset(&buf);
    sbuf_reserve(&buf, r.len);
    rc = pread_all(fd, buf.data, r.len, off + sizeof r, &got);
    if (rc || got < r.len) break;
    uint32_t c = crc32c(0, &r.seq, 16);
    if (crc32c(c, buf.data, r.len) != r.crc) break; /* torn: the end */
    rc = fn(ud, seq, buf.data, r.len);
    if (rc) break;
    seq++;
    off += sizeof r + r.len;
  }
  sbuf_free(&buf);
  *seqp = seq;
  *offp = off;
  return rc;
}

typedef struct {
  store *s;
  MDB_txn *txn;
  uint64_t full_seq; /* records before it: their deferred steps only */
  uint64_t applied;
} apply_ctx;

static int apply_rec(void *ud, uint64_t seq, const char *ops, size_t len) {
  apply_ctx *a = ud;
  a->applied++;
  return store_apply_ops_mode(a->txn, a->s, ops, len,
                              seq < a->full_seq ? APPLY_DEFERRED : APPLY_ALL);
}

/* Applies the log's records after the restored checkpoint (from the
 * header's position: the oldest record with deferred steps the checkpoint
 * lacks, else the first after it), then checkpoints (the header gets this
 * boot's id). */
static int replay(wal *l, store *s, uint64_t *applied) {
  int rc = 0;
  for (int grows = 0;; grows++) {
    *applied = 0;
    MDB_txn *txn;
    rc = store_write_begin(s, &txn);
    if (rc) break;
    uint64_t seq = l->cur.seq, off = l->cur.off;
    apply_ctx a = {s, txn, l->cur.full_seq, 0};
    rc = walk(l->fd, l->cur.capacity, &seq, &off, 0, apply_rec, &a);
    *applied = a.applied;
    if (rc == 0) rc = put_tail(s, txn, seq, off);
    if (rc == 0) rc = mark_del(txn); /* every deferred step is applied */
    if (rc == MDB_MAP_FULL && grows < 48) {
      store_write_end(s, txn, 0);
      char err[256];
      rc = store_grow(s, err, sizeof err);
      if (rc) {
        rc = ENOSPC;
        break;
      }
      continue;
    }
    if (rc) {
      store_write_end(s, txn, 0);
      break;
    }
    rc = store_write_end(s, txn, 1);
    if (rc == 0) rc = ftail_put(l->fd, seq, off);
    break;
  }
  return rc;
}

/* ---- deferred step records (writer.c) ----------------------------------- */

static int try_lock_byte(int fd, int byte) {
  struct flock fl = {0};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  while (fcntl(fd, F_OFD_SETLK, &fl) != 0) {
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EACCES ? EAGAIN : errno;
  }
  return 0;
}

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

int wal_defer_held(const wal *l) { return l && l->defer_held; }

int wal_defer_acquire(wal *l, store *s, MDB_txn *txn, int *applied) {
  *applied = 0;
  if (l->defer_held) return 0;
  uint64_t t = now_us();
  if (l->defer_tried_us && t - l->defer_tried_us < 1000000) return 0;
  l->defer_tried_us = t;
  int rc = try_lock_byte(l->fd, LOCK_DEFER);
  if (rc == EAGAIN) return 0; /* another process defers: this one does not */
  if (rc) return rc;
  /* a mark left behind: its writer died before it drained (no other
   * process defers), and LMDB has the rest of those records (the page
   * cache holds its commits; a restart recovers instead) */
  uint64_t mseq, moff, tseq, toff;
  int marked = mark_get(txn, &mseq, &moff);
  if (marked < 0) rc = MDB_CORRUPTED;
  if (marked > 0) {
    hdr h;
    rc = read_header(l->fd, &h);
    if (rc == EBADMSG) rc = MDB_CORRUPTED;
    if (rc == 0) rc = get_tail(s, txn, &h, &tseq, &toff);
    apply_ctx a = {s, txn, UINT64_MAX, 0};
    if (rc == 0) rc = walk(l->fd, h.capacity, &mseq, &moff, tseq, apply_rec, &a);
    if (rc == 0) rc = mark_del(txn);
    if (rc == 0) *applied = 1;
  }
  if (rc == 0) {
    /* and the lazy groups it had acknowledged but not committed */
    hdr h;
    int took = 0;
    rc = read_header(l->fd, &h);
    if (rc == EBADMSG) rc = MDB_CORRUPTED;
    if (rc == 0) rc = apply_lazy(l, s, txn, &h, &took);
    if (rc == 0 && took) *applied = 1;
  }
  if (rc) {
    struct flock fl = {0};
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = LOCK_DEFER;
    fl.l_len = 1;
    fcntl(l->fd, F_OFD_SETLK, &fl);
    return rc;
  }
  l->defer_held = 1;
  return 0;
}

int wal_mark_put(MDB_txn *txn, uint64_t seq, uint64_t off) { return mark_put(txn, seq, off); }
int wal_mark_del(MDB_txn *txn) { return mark_del(txn); }

typedef struct {
  steps_pending *p;
} load_ctx;

static int load_rec(void *ud, uint64_t seq, const char *ops, size_t len) {
  (void)seq;
  load_ctx *c = ud;
  return store_each_deferred(ops, len, c->p, NULL);
}

/* counts the operations of records after LMDB's tail that are more than
 * deferred steps (wal_load_deferred) */
static int left_rec(void *ud, uint64_t seq, const char *ops, size_t len) {
  (void)seq;
  size_t n = 0;
  int rc = store_each_deferred(ops, len, NULL, &n);
  *(size_t *)ud += n;
  return rc;
}

int wal_load_deferred(store *s, int *lazy_left, char *err, size_t errsz) {
  *lazy_left = 0;
  const char *dir = store_dir(s);
  const char *e = getenv("SLUICE_DEFER_LOAD"); /* 0: tests read LMDB alone */
  if (e && strcmp(e, "0") == 0) return 0;
  char *p = join(dir, WAL_FILE);
  int fd = open(p, O_RDONLY | O_CLOEXEC);
  free(p);
  if (fd < 0) return 0; /* no log: nothing deferred */
  /* a live writer that defers holds the lock: its records reach LMDB
   * within a drain (store.h) */
  struct flock fl = {0};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = LOCK_DEFER;
  fl.l_len = 1;
  int rc = fcntl(fd, F_OFD_GETLK, &fl) != 0 ? errno : 0;
  if (rc || fl.l_type != F_UNLCK) {
    close(fd);
    return 0;
  }
  MDB_txn *txn;
  int st = store_read_begin(s, &txn, err, errsz);
  if (st) {
    close(fd);
    return st;
  }
  uint64_t mseq, moff, tseq, toff;
  int marked = mark_get(txn, &mseq, &moff);
  hdr h;
  if (marked > 0) {
    rc = read_header(fd, &h);
    if (rc == 0) rc = get_tail_fd(fd, txn, &h, &tseq, &toff);
    load_ctx c = {store_pending(s)};
    pending_lock(c.p);
    if (rc == 0) rc = walk(fd, h.capacity, &mseq, &moff, tseq, load_rec, &c);
    pending_unlock(c.p);
  } else if (marked < 0) {
    rc = MDB_CORRUPTED;
  }
  /* what apply_lazy would apply: the records after LMDB's own tail. Read
   * without the write lock, beside writers that may checkpoint meanwhile:
   * whatever does not add up here is left to the read-write open to judge */
  if (rc == 0 && marked >= 0) {
    size_t left = 0;
    int r2 = marked ? 0 : read_header(fd, &h);
    if (r2 == 0) r2 = get_tail_fd(-1, txn, &h, &tseq, &toff);
    if (r2 == 0) r2 = walk(fd, h.capacity, &tseq, &toff, 0, left_rec, &left);
    *lazy_left = r2 != 0 || left > 0;
  }
  store_read_end(s, txn);
  close(fd);
  if (rc) {
    seterr(err, errsz, "store %s: reading the deferred steps of its log: %s", dir,
           rc == EBADMSG ? "no valid header" : mdb_strerror(rc));
    return status_of(rc);
  }
  return 0;
}

int wal_attach(wal **lp, store *s, int recover, int wrote, char *err, size_t errsz) {
  const char *dir = store_dir(s);
  MDB_env *env = store_env(s);
  int rc = 0, dead = 0;
  /* pins of processes that died pin nothing anyone needs: whoever commits
   * next checkpoints first */
  mdb_reader_check(env, &dead);
  rc = mdb_env_set_flags(env, MDB_NOSYNC, 1);
  if (rc == 0 && !*lp) {
    wal *l = wal_new(dir);
    rc = create_log(l, s);
    if (rc) {
      wal_close(l);
      seterr(err, errsz, "store %s: creating its log %s/" WAL_FILE ": %s", dir, dir,
             mdb_strerror(rc));
      mdb_env_set_flags(env, MDB_NOSYNC, 0);
      return status_of(rc);
    }
    *lp = l;
    return 0;
  }
  wal *l = *lp;
  if (rc == 0 && recover) {
    uint64_t n = 0;
    rc = replay(l, s, &n);
    if (rc == 0) rc = wal_checkpoint_now(l, s);
    if (rc) {
      seterr(err, errsz, "store %s: recovering after a restart (replaying its log): %s", dir,
             mdb_strerror(rc));
    }
  } else if (rc == 0 && wrote) {
    rc = wal_checkpoint_now(l, s);
    if (rc) seterr(err, errsz, "store %s: checkpointing its log: %s", dir, mdb_strerror(rc));
  } else if (rc) {
    seterr(err, errsz, "store %s: %s", dir, mdb_strerror(rc));
  }
  if (rc == 0) {
    /* deferred steps of a writer that died (before this open reads any)
     * are applied now, and this process may defer if no other one does */
    MDB_txn *txn;
    int applied = 0;
    rc = store_write_begin(s, &txn);
    if (rc == 0) {
      rc = wal_defer_acquire(l, s, txn, &applied);
      int crc = store_write_end(s, txn, rc == 0 && applied);
      if (rc == 0) rc = crc;
    }
    if (rc) seterr(err, errsz, "store %s: applying the deferred steps of its log: %s", dir,
                   mdb_strerror(rc));
  }
  if (l->locked) {
    lock_byte(l->fd, F_UNLCK, LOCK_OPEN);
    l->locked = 0;
  }
  if (rc) mdb_env_set_flags(env, MDB_NOSYNC, 0);
  return rc ? status_of(rc) : 0;
}

void wal_close(wal *l) {
  if (!l) return;
  ckpt_stop(l);
  pthread_mutex_destroy(&l->mu);
  pthread_mutex_destroy(&l->fill_mu);
  pthread_cond_destroy(&l->cond);
  if (l->pin) mdb_txn_abort(l->pin);
  if (l->fd >= 0) close(l->fd); /* drops the lock with it */
  free(l->dir);
  free(l);
}
