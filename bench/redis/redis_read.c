/* (Copied unchanged below this line from ../shared/peers/streams/redis_read.c, the streams peer benchmark.) */
/* redis_read.c - sequential cursor read of a whole Redis stream (what an event consumer does).
 *
 * usage: redis_read PORT KEY xrange|xread COUNT MAXENTRIES SECONDS
 *   xrange: XRANGE KEY (<lastid> + COUNT n     (first call: XRANGE KEY - + COUNT n)
 *   xread : XREAD COUNT n STREAMS KEY <lastid>  (first call: lastid 0-0)
 *   One request at a time (no pipelining), one connection, host 127.0.0.1 only.
 *   Stops when a call returns nothing, MAXENTRIES read, or SECONDS elapsed.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 7) { fprintf(stderr, "usage: %s PORT KEY xrange|xread COUNT MAXENTRIES SECONDS\n", argv[0]); return 2; }
    int port = atoi(argv[1]);
    const char *key = argv[2], *mode = argv[3];
    long count = atol(argv[4]), maxn = atol(argv[5]);
    double secs = atof(argv[6]);
    int xread = !strcmp(mode, "xread");
    redisContext *c = redisConnect("127.0.0.1", port);
    if (!c || c->err) { fprintf(stderr, "connect failed\n"); return 1; }
    char last[64] = "";
    long got = 0, calls = 0, bytes = 0;
    double t0 = now(), end = t0 + secs;
    while (got < maxn && now() < end) {
        redisReply *r;
        char cnt[32];
        snprintf(cnt, sizeof cnt, "%ld", count);
        if (xread) {
            r = redisCommand(c, "XREAD COUNT %s STREAMS %s %s", cnt, key, last[0] ? last : "0-0");
            if (!r) { fprintf(stderr, "error %s\n", c->errstr); return 1; }
            if (r->type == REDIS_REPLY_NIL) { freeReplyObject(r); break; }
            /* [[key, [[id,[f,v]],...]]] */
            redisReply *entries = r->element[0]->element[1];
            size_t k = entries->elements;
            if (k == 0) { freeReplyObject(r); break; }
            for (size_t i = 0; i < k; i++) {
                redisReply *fv = entries->element[i]->element[1];
                for (size_t j = 0; j < fv->elements; j++) bytes += fv->element[j]->len;
            }
            snprintf(last, sizeof last, "%s", entries->element[k - 1]->element[0]->str);
            got += k;
            freeReplyObject(r);
        } else {
            char start[80];
            if (last[0]) snprintf(start, sizeof start, "(%s", last); else strcpy(start, "-");
            r = redisCommand(c, "XRANGE %s %s + COUNT %s", key, start, cnt);
            if (!r) { fprintf(stderr, "error %s\n", c->errstr); return 1; }
            if (r->type != REDIS_REPLY_ARRAY) { fprintf(stderr, "reply type %d: %s\n", r->type, r->str ? r->str : ""); return 1; }
            size_t k = r->elements;
            if (k == 0) { freeReplyObject(r); break; }
            for (size_t i = 0; i < k; i++) {
                redisReply *fv = r->element[i]->element[1];
                for (size_t j = 0; j < fv->elements; j++) bytes += fv->element[j]->len;
            }
            snprintf(last, sizeof last, "%s", r->element[k - 1]->element[0]->str);
            got += k;
            freeReplyObject(r);
        }
        calls++;
    }
    double el = now() - t0;
    printf("redis_read mode=%s count=%ld entries=%ld calls=%ld secs=%.2f entries_per_s=%.0f MB_per_s=%.1f\n",
           mode, count, got, calls, el, got / el, bytes / el / 1e6);
    redisFree(c);
    return 0;
}
