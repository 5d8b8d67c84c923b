/* store_pg_hosts.c: the hosts and leases of a PostgreSQL store (store_pg.h,
 * "hosts and leases"): several `sluice serve` processes on one database,
 * each registered in sluice.hosts and owning the work its rows in
 * sluice.leases name. SQL over pg.h on the store's connection; the
 * comparisons of times are the server's now(), never a host's clock.
 *
 * Writes (register, deregister, claims, takes, releases) are pg_submit
 * batches: grouped with the store's commits and, once the fence is set,
 * refused when the host has expired. The renewal is a pg_read, since it is
 * how a host learns that it expired (the fence would only refuse it). */
#include "store_pg_int.h"

typedef struct {
  pgstore *s;
  pgstore_done_fn done;
  void *cookie;
  size_t stmt; /* the statement whose result is the answer */
  sbuf *out;   /* its first value, as text (NULL: none wanted) */
  int *alive;  /* renew: whether a row came back */
} op;

static void p_cstr(params *p, const char *s) { p_str(p, s, strlen(s)); }

static void op_done(void *cookie, int status, const char *errmsg, const pg_batch *b) {
  op *o = cookie;
  char err[600] = "";
  status = pgs_failed(o->s, status, errmsg, err, sizeof err);
  if (status == 0) {
    const PGresult *r = pg_batch_result(b, o->stmt);
    if (o->alive) *o->alive = r && PQntuples(r) > 0;
    if (o->out) {
      sbuf_reset(o->out);
      if (r && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)) {
        sbuf_add(o->out, PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0));
      }
    }
  }
  o->done(o->cookie, status, status ? err : NULL);
  free(o);
}

/* Sends b (a write unless read) whose statement `stmt` answers. */
static void send_op(pgstore *s, pg_batch *b, int read, size_t stmt, sbuf *out, int *alive,
                 pgstore_done_fn done, void *cookie) {
  op *o = xalloc(sizeof *o);
  o->s = s;
  o->done = done;
  o->cookie = cookie;
  o->stmt = stmt;
  o->out = out;
  o->alive = alive;
  pg *c = s->conn;
  if ((read ? pg_read_prepared(c, b, op_done, o) : pg_submit(c, b, op_done, o)) != 0) {
    free(o);
    done(cookie, STORE_EIO, "the PostgreSQL store is closing");
  }
}

void pgstore_host_register(pgstore *s, const pgstore_host *h, pgstore_done_fn done, void *cookie) {
  pg_batch *b = pg_batch_new();
  params p = {.n = 0};
  p_cstr(&p, h->id);
  p_cstr(&p, h->name);
  p_i64(&p, h->pid);
  p_i64(&p, h->lease_ms);
  p_str(&p, h->info, h->infon);
  if (!h->info) p.v[p.n - 1] = NULL; /* SQL NULL */
  p_cstr(&p, h->claims ? "t" : "f");
  add(b, "INSERT INTO sluice.hosts (id, name, pid, expires_at, info, claims) VALUES ($1::text, "
         "$2::text, $3::int, now() + $4::bigint * interval '1 millisecond', $5::text::json, "
         "$6::boolean)", &p);
  send_op(s, b, 0, 0, NULL, NULL, done, cookie);
}

void pgstore_host_renew(pgstore *s, const char *id, uint32_t lease_ms, int *alive,
                        pgstore_done_fn done, void *cookie) {
  *alive = 0;
  pg_batch *b = pg_batch_new();
  params p = {.n = 0};
  p_cstr(&p, id);
  p_i64(&p, lease_ms);
  add(b, "UPDATE sluice.hosts SET heartbeat_at = now(), "
         "expires_at = now() + $2::bigint * interval '1 millisecond' "
         "WHERE id = $1::text AND expires_at > now() RETURNING 1", &p);
  send_op(s, b, 1, 0, NULL, alive, done, cookie);
}

void pgstore_host_deregister(pgstore *s, const char *id, pgstore_done_fn done, void *cookie) {
  pg_batch *b = pg_batch_new();
  params p = {.n = 0};
  p_cstr(&p, id);
  add(b, "DELETE FROM sluice.hosts WHERE id = $1::text", &p);
  send_op(s, b, 0, 0, NULL, NULL, done, cookie);
}

void pgstore_host_expire(pgstore *s, const char *id, pgstore_done_fn done, void *cookie) {
  pg_batch *b = pg_batch_new();
  params p = {.n = 0};
  p_cstr(&p, id);
  add(b, "UPDATE sluice.hosts SET expires_at = now() - interval '1 millisecond' "
         "WHERE id = $1::text AND expires_at >= now()", &p);
  send_op(s, b, 0, 0, NULL, NULL, done, cookie);
}

void pgstore_host_fence(pgstore *s, const char *id) { pgs_set_prelude(s, id); }

/* the runs of a claim, as JSON: {id, pipeline, record} oldest first. The
 * record goes whole, as stored: PostgreSQL's JSON operators (->>,
 * json_strip_nulls) parse a document and refuse the \u0000 that a string
 * holding NUL and the codec's tags put in it, which made one such run fail
 * every claim pass; json_build_object and json_agg copy json values as
 * text. lua/hosts.lua reads the schedule out of it. */
#define RUN_JSON                                                                  \
  "coalesce(json_agg(json_build_object('id', r.id, 'pipeline', r.pipeline, "       \
  "'record', r.record) ORDER BY r.created_at_us, r.id), '[]')"

/* A JSON array of names as a text[], computed once (an InitPlan) whatever
 * the plan. As `name IN (SELECT json_array_elements_text(...))` the generic
 * plan of a prepared statement on a table without statistics yet (one
 * lease estimated) joined it by a nested loop that parsed the array again
 * for each lease: releasing 758 leases took 582 ms, 56 ms this way. */
#define NAMES(param) "ARRAY(SELECT json_array_elements_text(" param "::text::json))"

/* The reap: frees the leases of expired hosts. FOR UPDATE waits for no
 * dead host's commit in flight (its fence holds KEY SHARE on its row): the
 * next reap gets that one. */
static void add_reap(pg_batch *b) {
  add(b, "WITH dead AS (SELECT h.id FROM sluice.hosts h WHERE h.expires_at < now() "
         "AND EXISTS (SELECT 1 FROM sluice.leases l WHERE l.host_id = h.id) "
         "FOR UPDATE OF h SKIP LOCKED) "
         "DELETE FROM sluice.leases l USING dead WHERE l.host_id = dead.id", NULL);
}

void pgstore_claim_runs(pgstore *s, const char *id, const char *pipelines, size_t pn,
                        size_t limit, size_t floor, sbuf *out, pgstore_done_fn done,
                        void *cookie) {
  pg_batch *b = pg_batch_new();
  add_reap(b);
  add(b, "DELETE FROM sluice.hosts WHERE id IN (SELECT id FROM sluice.hosts "
         "WHERE expires_at < now() - interval '1 hour' FOR UPDATE SKIP LOCKED)", NULL);
  params p = {.n = 0};
  p_cstr(&p, id);
  p_str(&p, pipelines, pn);
  p_i64(&p, (int64_t)limit);
  p_i64(&p, (int64_t)floor);
  /* The share: the active runs of these pipelines that live claiming
   * hosts hold or nobody holds, over the number of those hosts (this one
   * counted whatever its flag says), less what this host holds already;
   * at least `floor`, so a backlog drains even when the others take none
   * of it (they lack its pipeline, or stall until their lease expires).
   * A dead host's runs count once the reap above freed them.
   * The lease's primary key is what makes a claim exclusive: SKIP LOCKED
   * only keeps two claimers from waiting on each other's rows. */
  add(b, "WITH live AS (SELECT h.id FROM sluice.hosts h WHERE h.expires_at > now() "
         "AND (h.claims OR h.id = $1::text)), "
         "pipes AS (SELECT json_array_elements_text($2::text::json) AS name), "
         "pool AS (SELECT l.host_id FROM sluice.runs r LEFT JOIN sluice.leases l "
         "ON l.kind = 'run' AND l.name = r.id WHERE r.active AND r.pipeline IN (SELECT name FROM pipes) "
         "AND (l.host_id IS NULL OR l.host_id IN (SELECT id FROM live))), "
         "share AS (SELECT count(*) FILTER (WHERE host_id IS NULL) AS free, "
         "least($3::bigint, greatest($4::bigint, ceil(count(*)::numeric / "
         "greatest(1, (SELECT count(*) FROM live)))::bigint "
         "- count(*) FILTER (WHERE host_id = $1::text))) AS n FROM pool), "
         "free AS (SELECT r.id, r.pipeline, r.record, r.created_at_us FROM sluice.runs r "
         "WHERE r.active AND r.pipeline IN (SELECT name FROM pipes) "
         "AND NOT EXISTS (SELECT 1 FROM sluice.leases l WHERE l.kind = 'run' AND l.name = r.id) "
         "ORDER BY r.created_at_us, r.id LIMIT (SELECT n FROM share) FOR UPDATE OF r SKIP LOCKED), "
         "took AS (INSERT INTO sluice.leases (kind, name, host_id) "
         "SELECT 'run', id, $1::text FROM free ON CONFLICT DO NOTHING RETURNING name) "
         "SELECT json_build_object('runs', " RUN_JSON ", 'free', (SELECT free FROM share)) "
         "FROM free r JOIN took t ON t.name = r.id", &p);
  send_op(s, b, 0, 2, out, NULL, done, cookie);
}

void pgstore_host_runs(pgstore *s, const char *id, sbuf *out, pgstore_done_fn done,
                       void *cookie) {
  pg_batch *b = pg_batch_new();
  params p = {.n = 0};
  p_cstr(&p, id);
  add(b, "SELECT " RUN_JSON " FROM sluice.leases l JOIN sluice.runs r ON r.id = l.name "
         "WHERE l.kind = 'run' AND l.host_id = $1::text AND r.active", &p);
  send_op(s, b, 1, 0, out, NULL, done, cookie);
}

void pgstore_host_cancelled(pgstore *s, const char *id, sbuf *out, pgstore_done_fn done,
                            void *cookie) {
  pg_batch *b = pg_batch_new();
  params p = {.n = 0};
  p_cstr(&p, id);
  add(b, "SELECT coalesce(json_agg(r.id), '[]') FROM sluice.leases l JOIN sluice.runs r "
         "ON r.id = l.name WHERE l.kind = 'run' AND l.host_id = $1::text AND r.status = 'cancelled'",
      &p);
  send_op(s, b, 1, 0, out, NULL, done, cookie);
}

void pgstore_run_hosts(pgstore *s, const char *ids, size_t n, sbuf *out, pgstore_done_fn done,
                       void *cookie) {
  pg_batch *b = pg_batch_new();
  params p = {.n = 0};
  p_str(&p, ids, n);
  add(b, "SELECT coalesce(json_object_agg(l.name, json_build_object('host', h.id, 'alive', "
         "h.expires_at > now(), 'machine', h.name, 'pid', h.pid)), '{}') "
         "FROM sluice.leases l JOIN sluice.hosts h ON h.id = l.host_id "
         "WHERE l.kind = 'run' AND l.name = ANY (" NAMES("$1") ")",
      &p);
  send_op(s, b, 1, 0, out, NULL, done, cookie);
}

int pgstore_hold_run(pgstore_batch *b, const char *id, const char *run, size_t runn) {
  if (runn == 0 || memchr(run, '\0', runn)) return STORE_EINVAL;
  params p = {.n = 0};
  p_cstr(&p, id);
  p_str(&p, run, runn);
  /* sluice.hold_run's insert, then the function itself only when the run
   * is not this host's now (it raises SLU03): its own check filters by
   * host, which a planner without statistics reads through leases_by_host,
   * all the host's leases per run (160 us at 1,000 runs); by the primary
   * key, and without plpgsql, it is one probe */
  add(b->pb, "INSERT INTO sluice.leases (kind, name, host_id) VALUES ('run', $2::text, $1::text) "
             "ON CONFLICT DO NOTHING", &p);
  add(b->pb, "SELECT sluice.hold_run($1::text, $2::text) WHERE (SELECT host_id FROM "
             "sluice.leases WHERE kind = 'run' AND name = $2::text) IS DISTINCT FROM $1::text", &p);
  b->ops++;
  return 0;
}

void pgstore_api_schedules(pgstore *s, sbuf *out, pgstore_done_fn done, void *cookie) {
  pg_batch *b = pg_batch_new();
  /* json_build_object copies the record as text: no parse (\u0000) */
  add(b, "SELECT coalesce(json_agg(json_build_object('name', name, 'record', record) "
         "ORDER BY name), '[]') FROM sluice.schedules WHERE api", NULL);
  send_op(s, b, 1, 0, out, NULL, done, cookie);
}

void pgstore_take_lease(pgstore *s, const char *id, const char *kind, const char *name,
                        size_t namen, sbuf *holder, pgstore_done_fn done, void *cookie) {
  if (namen == 0 || memchr(name, '\0', namen)) {
    done(cookie, STORE_EINVAL, "a lease name is a non-empty text without NUL bytes");
    return;
  }
  pg_batch *b = pg_batch_new();
  add_reap(b); /* a host that claims nothing (sluice run) takes a dead host's lease too */
  params p = {.n = 0};
  p_cstr(&p, id);
  p_cstr(&p, kind);
  p_str(&p, name, namen);
  add(b, "INSERT INTO sluice.leases (kind, name, host_id) VALUES ($2::text, $3::text, $1::text) "
         "ON CONFLICT DO NOTHING", &p);
  params q = {.n = 0};
  p_cstr(&q, kind);
  p_str(&q, name, namen);
  add(b, "SELECT host_id FROM sluice.leases WHERE kind = $1::text AND name = $2::text", &q);
  send_op(s, b, 0, 2, holder, NULL, done, cookie);
}

void pgstore_release_leases(pgstore *s, const char *id, const char *kind, const char *names,
                            size_t nn, pgstore_done_fn done, void *cookie) {
  pg_batch *b = pg_batch_new();
  params p = {.n = 0};
  p_cstr(&p, id);
  p_cstr(&p, kind);
  p_str(&p, names, nn);
  add(b, "DELETE FROM sluice.leases WHERE host_id = $1::text AND kind = $2::text "
         "AND name = ANY (" NAMES("$3") ")", &p);
  send_op(s, b, 0, 0, NULL, NULL, done, cookie);
}

void pgstore_list_hosts(pgstore *s, uint32_t recent_s, sbuf *out, pgstore_done_fn done,
                        void *cookie) {
  pg_batch *b = pg_batch_new();
  params p = {.n = 0};
  p_i64(&p, recent_s);
  add(b, "SELECT coalesce(json_agg(x ORDER BY x.alive DESC, x.started_s, x.id), '[]') FROM ("
         "SELECT h.id, h.name, h.pid, h.expires_at > now() AS alive, "
         "extract(epoch FROM now() - h.started_at)::float8 AS started_s, "
         "extract(epoch FROM now() - h.heartbeat_at)::float8 AS heartbeat_s, "
         "extract(epoch FROM h.expires_at - now())::float8 AS expires_s, h.info, "
         "coalesce((SELECT json_object_agg(c.kind, c.n) FROM (SELECT kind, count(*) AS n "
         "FROM sluice.leases WHERE host_id = h.id GROUP BY kind) c), '{}') AS leases, "
         "coalesce((SELECT json_agg(l.kind || ' ' || l.name ORDER BY l.kind, l.name) "
         "FROM sluice.leases l WHERE l.host_id = h.id AND l.kind <> 'run'), '[]') AS named "
         "FROM sluice.hosts h WHERE h.expires_at > now() - $1::bigint * interval '1 second') x",
      &p);
  send_op(s, b, 1, 0, out, NULL, done, cookie);
}
