/* The daemon's allocator: its own blocks (output buffers and queues,
 * member lists, name entries, keys, the MOTD) go through chat_malloc and
 * friends, and its objects (sessions, channels) through hark's allocator,
 * which finalizers release with chat_free. chat_replace_allocator sets
 * both, so that one allocator (a test's failing one) sees every
 * allocation of the daemon. Defaults: malloc, realloc, calloc, free. */
#ifndef CHATD_ALLOC_H
#define CHATD_ALLOC_H

#include <stddef.h>

typedef struct chat_allocator {
  void *(*malloc_fn)(size_t);
  void *(*realloc_fn)(void *, size_t);
  void *(*calloc_fn)(size_t, size_t);
  void (*free_fn)(void *);
} chat_allocator;

extern chat_allocator chat_alloc;

/* Same contract as hark_replace_allocator (all four non-NULL, before the
 * daemon starts); also installs them as hark's. Returns 0 or HARK_EINVAL. */
int chat_replace_allocator(void *(*malloc_fn)(size_t),
                           void *(*realloc_fn)(void *, size_t),
                           void *(*calloc_fn)(size_t, size_t),
                           void (*free_fn)(void *));

static inline void *chat_malloc(size_t n) { return chat_alloc.malloc_fn(n); }
static inline void *chat_calloc(size_t c, size_t n) {
  return chat_alloc.calloc_fn(c, n);
}
static inline void *chat_realloc(void *p, size_t n) {
  return chat_alloc.realloc_fn(p, n);
}
static inline void chat_free(void *p) {
  if (p != NULL)
    chat_alloc.free_fn(p);
}
char *chat_strdup(const char *s); /* NULL when memory runs out */

#endif
