/* The nick and channel registries: rfc1459-folded names -> hark_weak.
 * Holding the objects weakly means a registry can never keep a session or
 * a channel alive, and a stale entry can never hand out a dead one. */
#include <stdlib.h>
#include <string.h>

#include "chatd.h"

struct names_entry {
  names_entry *next;
  hark_weak ref;
  char key[];
};

static size_t hash(const char *s) {
  size_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

int names_init(names *n) {
  n->nslots = 64;
  n->count = 0;
  n->slots = chat_calloc(n->nslots, sizeof *n->slots);
  return n->slots != NULL ? 0 : -1;
}

void names_free(names *n) {
  for (size_t i = 0; i < n->nslots; i++) {
    names_entry *e = n->slots[i];
    while (e != NULL) {
      names_entry *next = e->next;
      hark_weak_clear(&e->ref);
      chat_free(e);
      e = next;
    }
  }
  chat_free(n->slots);
  n->slots = NULL;
  n->count = 0;
}

static names_entry **find(names *n, const char *folded) {
  names_entry **pp = &n->slots[hash(folded) & (n->nslots - 1)];
  while (*pp != NULL && strcmp((*pp)->key, folded) != 0)
    pp = &(*pp)->next;
  return pp;
}

void *names_get(names *n, const char *name) {
  char folded[CHATD_CHAN_MAX + 1];
  irc_fold(folded, name, sizeof folded);
  names_entry *e = *find(n, folded);
  return e != NULL ? hark_weak_get(&e->ref) : NULL;
}

static void grow(names *n) {
  size_t ns = n->nslots * 2;
  names_entry **slots = chat_calloc(ns, sizeof *slots);
  if (slots == NULL)
    return; /* longer chains, still correct */
  for (size_t i = 0; i < n->nslots; i++) {
    names_entry *e = n->slots[i];
    while (e != NULL) {
      names_entry *next = e->next;
      size_t h = hash(e->key) & (ns - 1);
      e->next = slots[h];
      slots[h] = e;
      e = next;
    }
  }
  chat_free(n->slots);
  n->slots = slots;
  n->nslots = ns;
}

int names_put(names *n, const char *name, void *obj) {
  char folded[CHATD_CHAN_MAX + 1];
  irc_fold(folded, name, sizeof folded);
  names_entry **pp = find(n, folded);
  if (*pp == NULL) {
    size_t len = strlen(folded);
    names_entry *e = chat_calloc(1, sizeof *e + len + 1);
    if (e == NULL)
      return -1;
    memcpy(e->key, folded, len + 1);
    *pp = e;
    n->count++;
    if (n->count > n->nslots)
      grow(n);
    pp = find(n, folded);
  }
  return hark_weak_set(&(*pp)->ref, obj) == 0 ? 0 : -1;
}

void names_del(names *n, const char *name, void *obj) {
  char folded[CHATD_CHAN_MAX + 1];
  irc_fold(folded, name, sizeof folded);
  names_entry **pp = find(n, folded);
  names_entry *e = *pp;
  if (e == NULL)
    return;
  void *cur = hark_weak_get(&e->ref);
  hark_unref(cur);
  if (cur != NULL && cur != obj)
    return; /* the name belongs to someone else now */
  *pp = e->next;
  hark_weak_clear(&e->ref);
  chat_free(e);
  n->count--;
}

size_t names_count(const names *n) { return n->count; }

void names_foreach(names *n, void (*fn)(void *obj, void *data), void *data) {
  for (size_t i = 0; i < n->nslots; i++)
    for (names_entry *e = n->slots[i]; e != NULL; e = e->next) {
      void *obj = hark_weak_get(&e->ref);
      if (obj != NULL) {
        fn(obj, data);
        hark_unref(obj);
      }
    }
}
