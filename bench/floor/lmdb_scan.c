/* lmdb_scan.c - the floor of reading a run's stored steps: a bare LMDB cursor scan of the
 * same records sluice's replay reads (bench/replay.sh), in the same store.
 *
 * usage: lmdb_scan STORE_DIR PREFIX_BASE RUNS [REPS]
 *   For each run r in 1..RUNS, REPS times: one read transaction, a cursor on the named
 *   database "steps" from the key "<PREFIX_BASE><r>\0" while keys start with it, touching
 *   every key and value byte (a checksum, so nothing is optimized away). Opens the
 *   environment read-only (MDB_RDONLY | MDB_NOTLS, as sluice's read-only commands do).
 * Prints records, ns per record (best and median over runs x reps) and the checksum.
 */
#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(x) do { int rc_ = (x); if (rc_) { fprintf(stderr, "%s: %s\n", #x, mdb_strerror(rc_)); exit(1);} } while (0)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: %s STORE_DIR PREFIX_BASE RUNS [REPS]\n", argv[0]); return 2; }
    const char *dir = argv[1], *base = argv[2];
    int runs = atoi(argv[3]), reps = argc > 4 ? atoi(argv[4]) : 5;
    MDB_env *env;
    CHECK(mdb_env_create(&env));
    CHECK(mdb_env_set_maxdbs(env, 64));
    CHECK(mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS, 0644));
    MDB_txn *txn;
    MDB_dbi dbi;
    CHECK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn));
    CHECK(mdb_dbi_open(txn, "steps", 0, &dbi));
    CHECK(mdb_txn_commit(txn)); /* keeps the handle (an abort would drop it) */
    double *per = malloc(sizeof *per * (size_t)(runs * reps));
    size_t total = 0, nper = 0;
    uint64_t sum = 0;
    for (int rep = 0; rep < reps; rep++) {
        for (int r = 1; r <= runs; r++) {
            char prefix[256];
            int plen = snprintf(prefix, sizeof prefix, "%s%d", base, r) + 1; /* with its NUL */
            double t0 = now();
            CHECK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn));
            MDB_cursor *c;
            CHECK(mdb_cursor_open(txn, dbi, &c));
            MDB_val k = {(size_t)plen, prefix}, v;
            size_t n = 0;
            int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
            while (rc == 0 && k.mv_size >= (size_t)plen && memcmp(k.mv_data, prefix, (size_t)plen) == 0) {
                const unsigned char *p = v.mv_data, *q = k.mv_data;
                for (size_t i = 0; i < v.mv_size; i++) sum += p[i];
                for (size_t i = 0; i < k.mv_size; i++) sum += q[i];
                n++;
                rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
            }
            if (rc != 0 && rc != MDB_NOTFOUND) { fprintf(stderr, "cursor: %s\n", mdb_strerror(rc)); return 1; }
            mdb_cursor_close(c);
            mdb_txn_abort(txn);
            double el = now() - t0;
            if (n == 0) { fprintf(stderr, "no records under %s\n", prefix); return 1; }
            per[nper++] = el * 1e9 / (double)n;
            total += n;
        }
    }
    qsort(per, nper, sizeof *per, cmpd);
    printf("lmdb_scan records=%zu scans=%zu best_ns_per_record=%.1f median_ns_per_record=%.1f checksum=%llu\n",
           total, nper, per[0], per[nper / 2], (unsigned long long)sum);
    free(per);
    mdb_env_close(env);
    return 0;
}
