/* The replaceable allocator: every allocation of hark goes through here so
 * that tests can count allocations and fail each one in turn. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static struct {
  void *(*malloc_fn)(size_t);
  void *(*realloc_fn)(void *, size_t);
  void *(*calloc_fn)(size_t, size_t);
  void (*free_fn)(void *);
} allocator = {malloc, realloc, calloc, free};

int hark_replace_allocator(void *(*malloc_fn)(size_t),
                           void *(*realloc_fn)(void *, size_t),
                           void *(*calloc_fn)(size_t, size_t),
                           void (*free_fn)(void *)) {
  if (malloc_fn == NULL || realloc_fn == NULL || calloc_fn == NULL ||
      free_fn == NULL)
    return HARK_EINVAL;
  allocator.malloc_fn = malloc_fn;
  allocator.realloc_fn = realloc_fn;
  allocator.calloc_fn = calloc_fn;
  allocator.free_fn = free_fn;
  return 0;
}

void *hark__malloc(size_t size) {
  return size ? allocator.malloc_fn(size) : NULL;
}

void *hark__calloc(size_t count, size_t size) {
  return count && size ? allocator.calloc_fn(count, size) : NULL;
}

/* Like realloc, but a failure leaves ptr untouched and size 0 frees. */
void *hark__realloc(void *ptr, size_t size) {
  if (size == 0) {
    hark__free(ptr);
    return NULL;
  }
  return allocator.realloc_fn(ptr, size);
}

void hark__free(void *ptr) {
  if (ptr != NULL)
    allocator.free_fn(ptr);
}

char *hark__strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = hark__malloc(n);
  if (d != NULL)
    memcpy(d, s, n);
  return d;
}
