/* Error names, and the one way the library says anything: the log hook.
 * hark never writes to a stream of its own accord; what it has to say
 * (misuse, a likely leak, reports asked for with HARK_DEBUG) goes to the
 * function set with hark_set_log, by default a line on stderr. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>

const char *hark_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
  case HARK_ENOENT:
    return "HARK_ENOENT: no such entry, or the object has died";
  case HARK_EAGAIN:
    return "HARK_EAGAIN: resource temporarily unavailable (queue full)";
  case HARK_ENOMEM:
    return "HARK_ENOMEM: out of memory";
  case HARK_EBUSY:
    return "HARK_EBUSY: resource busy";
  case HARK_EEXIST:
    return "HARK_EEXIST: already exists";
  case HARK_EINVAL:
    return "HARK_EINVAL: invalid argument";
  case HARK_ERANGE:
    return "HARK_ERANGE: out of range";
  case HARK_ECANCELED:
    return "HARK_ECANCELED: operation canceled";
  case HARK_ESTOPPED:
    return "HARK_ESTOPPED: a receiver stopped the send";
  default:
    return "unknown error";
  }
}

/* ---- the log hook ------------------------------------------------------ */

static void to_stderr(void *data, hark_log_level level, const char *msg) {
  (void)data;
  static const char *const names[] = {"error: ", "warning: ", ""};
  unsigned i = (unsigned)level < 3 ? (unsigned)level : 2;
  fprintf(stderr, "hark: %s%s\n", names[i], msg);
}

/* Readers (messages) share the lock, so a log function may itself make
 * hark log (glibc's default rwlock prefers readers: a nested read never
 * waits for a writer); hark_set_log takes it exclusively, so once it
 * returns the previous function is not running and never will again. */
static pthread_rwlock_t log_lock = PTHREAD_RWLOCK_INITIALIZER;
static hark_log_fn log_fn = to_stderr;
static void *log_data;

void hark_set_log(hark_log_fn fn, void *data) {
  pthread_rwlock_wrlock(&log_lock);
  log_fn = fn != NULL ? fn : to_stderr;
  log_data = fn != NULL ? data : NULL;
  pthread_rwlock_unlock(&log_lock);
}

void hark__log(hark_log_level level, const char *fmt, ...) {
  char msg[512]; /* no allocation: it may report running out */
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  pthread_rwlock_rdlock(&log_lock);
  log_fn(log_data, level, msg);
  pthread_rwlock_unlock(&log_lock);
}
