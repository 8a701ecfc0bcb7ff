/* stderr logging: "2024-01-02T03:04:05.678Z info: text". The level is the
 * one piece of process-wide state, set once at start-up. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static enum log_level threshold = LOG_INFO;
static const char *const names[] = {"error", "warn", "info", "debug"};

void log_set_level(enum log_level level) { threshold = level; }

int log_parse_level(const char *name) {
  for (int i = 0; i < 4; i++)
    if (strcmp(name, names[i]) == 0)
      return i;
  return -1;
}

const char *log_level_name(enum log_level level) { return names[level]; }

void log_msg(enum log_level level, const char *fmt, ...) {
  if (level > threshold)
    return;
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  time_t t = tv.tv_sec;
  gmtime_r(&t, &tm);
  char line[1024];
  size_t n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
  n += (size_t)snprintf(line + n, sizeof line - n,
                        ".%03dZ %s: ", (int)(tv.tv_usec / 1000), names[level]);
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
  va_end(ap);
  n = k < 0 ? n : n + (size_t)k;
  if (n > sizeof line - 2)
    n = sizeof line - 2;
  line[n++] = '\n';
  fwrite(line, 1, n, stderr); /* one write: lines never interleave */
}
