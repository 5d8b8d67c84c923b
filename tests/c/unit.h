/* unit.h: the C unit tests' few macros (libuv TEST_IMPL in spirit): each
 * test is a function; CHECK records a failure with file and line and goes on;
 * the runner prints "N passed, N failed" and exits non-zero on any failure;
 * a scratch directory for the program. */
#ifndef SLUICE_UNIT_H
#define SLUICE_UNIT_H
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int unit_failed_checks;
static int unit_tests_failed, unit_tests_passed;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      unit_failed_checks++;                                                    \
    }                                                                          \
  } while (0)

#define CHECK_STR(a, b)                                                        \
  do {                                                                         \
    const char *a_ = (a), *b_ = (b);                                           \
    if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                   \
      fprintf(stderr, "%s:%d: expected \"%s\", got \"%s\"\n", __FILE__,        \
              __LINE__, b_ ? b_ : "(null)", a_ ? a_ : "(null)");               \
      unit_failed_checks++;                                                    \
    }                                                                          \
  } while (0)

#define RUN(test)                                                              \
  do {                                                                         \
    int before_ = unit_failed_checks;                                          \
    test();                                                                    \
    if (unit_failed_checks == before_) {                                       \
      unit_tests_passed++;                                                     \
    } else {                                                                   \
      unit_tests_failed++;                                                     \
      fprintf(stderr, "FAIL %s\n", #test);                                     \
    }                                                                          \
  } while (0)

/* A scratch directory for the whole test program: unit_tmpdir("store")
 * makes /tmp/sluice-test-store-XXXXXX (0 on success), unit_path("a/b") names
 * a file in it (8 results live at once), unit_rmtree() removes it. */
static char tmp[64];

static inline int unit_tmpdir(const char *name) {
  snprintf(tmp, sizeof tmp, "/tmp/sluice-test-%s-XXXXXX", name);
  if (!mkdtemp(tmp)) {
    perror("mkdtemp");
    return -1;
  }
  return 0;
}

static inline char *path(const char *rel) {
  static char buf[8][256];
  static int n;
  char *p = buf[n++ % 8];
  snprintf(p, 256, "%s/%s", tmp, rel);
  return p;
}

static inline int unit_rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(p);
}

static inline void unit_rmtree(void) { nftw(tmp, unit_rm_one, 16, FTW_DEPTH | FTW_PHYS); }

#define UNIT_DONE()                                                            \
  (printf("%d passed, %d failed\n", unit_tests_passed, unit_tests_failed),     \
   unit_tests_failed ? 1 : 0)

#endif
