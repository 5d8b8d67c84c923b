/* bench/stdlib/csv_floor.c PATH: the CSV reader of host/csv.c alone, no Lua:
 * reads PATH in 64 KiB chunks as l_csv.c does and counts records and
 * fields. Prints one JSON line. It shows what parsing costs by itself, next
 * to csv.rows, which also builds a Lua table of strings per record. */
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "csv.h"

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: csv_floor PATH\n");
    return 2;
  }
  int fd = open(argv[1], O_RDONLY);
  if (fd < 0) {
    perror(argv[1]);
    return 1;
  }
  static char buf[64 * 1024];
  csv_reader r;
  csv_init(&r, ',');
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  long long records = 0, fields = 0, bytes = 0;
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) {
    bytes += n;
    size_t pos = 0;
    while (pos < (size_t)n) {
      size_t used;
      int rc = csv_feed(&r, buf + pos, (size_t)n - pos, &used);
      pos += used;
      if (rc == CSV_ERROR) {
        fprintf(stderr, "line %llu: %s\n", (unsigned long long)r.err_line, r.err);
        return 1;
      }
      if (rc == CSV_RECORD) {
        records++;
        fields += (long long)csv_nfields(&r);
      }
    }
  }
  if (csv_finish(&r) == CSV_RECORD) records++;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("{\"bench\":\"csv\",\"impl\":\"csv.c alone\",\"mode\":\"parse only\",\"records\":%lld,"
         "\"fields\":%lld,\"bytes\":%lld,\"wall_s\":%.3f,\"records_per_s\":%.0f,\"mb_per_s\":%.1f}\n",
         records, fields, bytes, s, records / s, bytes / 1e6 / s);
  csv_free(&r);
  close(fd);
  return 0;
}
