/* The daemon's allocator: see alloc.h. */
#include <hark.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

chat_allocator chat_alloc = {malloc, realloc, calloc, free};

int chat_replace_allocator(void *(*malloc_fn)(size_t),
                           void *(*realloc_fn)(void *, size_t),
                           void *(*calloc_fn)(size_t, size_t),
                           void (*free_fn)(void *)) {
  int r = hark_replace_allocator(malloc_fn, realloc_fn, calloc_fn, free_fn);
  if (r != 0)
    return r;
  chat_alloc = (chat_allocator){malloc_fn, realloc_fn, calloc_fn, free_fn};
  return 0;
}

char *chat_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = chat_malloc(n);
  if (d != NULL)
    memcpy(d, s, n);
  return d;
}
