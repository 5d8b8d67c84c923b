/* unit.h: the C unit tests' few macros (libuv TEST_IMPL in spirit): each
 * test is a function; CHECK records a failure with file and line and goes on;
 * the runner prints "N passed, N failed" and exits non-zero on any failure. */
#ifndef SLUICE_UNIT_H
#define SLUICE_UNIT_H
#include <stdio.h>
#include <string.h>

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

#define UNIT_DONE()                                                            \
  (printf("%d passed, %d failed\n", unit_tests_passed, unit_tests_failed),     \
   unit_tests_failed ? 1 : 0)

#endif
