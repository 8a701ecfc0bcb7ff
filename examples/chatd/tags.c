/* IRCv3 message tags on the lines the daemon relays. An event carries one
 * plain line, shared by every receiver that asked for nothing; a receiver
 * whose client asked for server-time, message-tags or extended-join gets
 * one of a few tagged forms, each made once per event by the first
 * receiver that needs it (so a fan-out to plain clients costs what it
 * did before tags existed). */
#include <stdio.h>
#include <string.h>

#include "chatd.h"

static void stamp(chat_event *ev) {
  if (ev->at.tv_sec == 0)
    clock_gettime(CLOCK_REALTIME, &ev->at);
}

static void make_id(chat_server *srv, chat_event *ev) {
  if (ev->id[0] == '\0')
    snprintf(ev->id, sizeof ev->id, "%s%llx", srv->msgid_prefix,
             (unsigned long long)++srv->msgid_seq);
}

/* What message-tags adds to ev's line: "" when nothing. */
static size_t mtags(chat_server *srv, chat_event *ev, char *buf, size_t cap) {
  size_t n = 0;
  buf[0] = '\0';
  if (ev->msgid) {
    make_id(srv, ev);
    n += (size_t)snprintf(buf + n, cap - n, "msgid=%s", ev->id);
  }
  if (ev->msgid && ev->origin != NULL && (ev->origin->modes & UMODE_B) &&
      n < cap)
    n += (size_t)snprintf(buf + n, cap - n, "%sdraft/bot", n ? ";" : "");
  if (ev->client_tags != NULL && ev->client_tags[0] != '\0' && n < cap)
    n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? ";" : "",
                          ev->client_tags);
  return n < cap ? n : cap - 1;
}

chat_buf *event_line(chat_server *srv, chat_event *ev, unsigned caps) {
  unsigned k = 0;
  if (caps & CAP_SERVER_TIME)
    k |= 1;
  if (caps & CAP_MESSAGE_TAGS)
    k |= 2;
  if ((caps & CAP_EXTENDED_JOIN) && ev->alt != NULL)
    k |= 4;
  chat_buf *base = k & 4 ? ev->alt : ev->line;
  if (base == NULL && (k & 2))
    base = ev->bare;
  if (base == NULL)
    return NULL;
  if ((k & 2) && !ev->msgid && ev->client_tags == NULL)
    k &= ~2u; /* message-tags adds nothing to this one */
  if ((k & 3) == 0)
    return base;
  if (ev->variant[k] != NULL)
    return ev->variant[k];
  /* server tags and client tags each have their own 4094 bytes */
  char tags[2 * CHATD_TAGS_MAX];
  size_t n = 0;
  if (k & 1) {
    stamp(ev);
    struct tm tm;
    time_t t = ev->at.tv_sec;
    gmtime_r(&t, &tm);
    n += strftime(tags, sizeof tags, "time=%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(tags + n, sizeof tags - n, ".%03ldZ",
                          ev->at.tv_nsec / 1000000);
  }
  if (k & 2) {
    char m[CHATD_TAGS_MAX + 128];
    if (mtags(srv, ev, m, sizeof m) > 0)
      n += (size_t)snprintf(tags + n, sizeof tags - n, "%s%s", n ? ";" : "", m);
  }
  if (n >= sizeof tags)
    n = sizeof tags - 1;
  chat_buf *b = chat_malloc(sizeof *b + n + 2 + base->len + 1);
  if (b == NULL)
    return base; /* untagged is better than nothing */
  b->refs = 1;
  b->data[0] = '@';
  memcpy(b->data + 1, tags, n);
  b->data[n + 1] = ' ';
  memcpy(b->data + n + 2, base->data, base->len + 1);
  b->len = (unsigned)(n + 2 + base->len);
  ev->variant[k] = b;
  ev->made = 1;
  return b;
}

void event_release(chat_event *ev) {
  if (ev->made == 0)
    return; /* (a fan-out to plain clients only) */
  ev->made = 0;
  for (size_t i = 0; i < sizeof ev->variant / sizeof ev->variant[0]; i++) {
    chat_buf_unref(ev->variant[i]);
    ev->variant[i] = NULL;
  }
}

void tags_client_only(const char *tags, char *buf, size_t cap) {
  size_t n = 0;
  buf[0] = '\0';
  while (tags != NULL && *tags != '\0') {
    size_t len = strcspn(tags, ";");
    /* a client-only tag, with a name: "+x" or "+x=v" */
    if (tags[0] == '+' && len > 1 && n + (n > 0) + len < cap) {
      if (n > 0)
        buf[n++] = ';';
      memcpy(buf + n, tags, len);
      n += len;
      buf[n] = '\0';
    }
    tags += len;
    if (*tags == ';')
      tags++;
  }
}

bool tags_get(const char *tags, const char *name, char *buf, size_t cap) {
  size_t nl = strlen(name);
  while (tags != NULL && *tags != '\0') {
    size_t len = strcspn(tags, ";");
    if (len >= nl && strncmp(tags, name, nl) == 0 &&
        (len == nl || tags[nl] == '=')) {
      size_t vl = len > nl ? len - nl - 1 : 0;
      if (vl >= cap)
        return false;
      memcpy(buf, tags + nl + (len > nl), vl);
      buf[vl] = '\0';
      return true;
    }
    tags += len;
    if (*tags == ';')
      tags++;
  }
  return false;
}

chat_buf *tags_prepend(const chat_buf *b, const char *tag) {
  size_t tl = strlen(tag);
  bool tagged = b->len > 0 && b->data[0] == '@';
  /* "@tag;rest" or "@tag line" */
  size_t len = 1 + tl + 1 + (tagged ? b->len - 1 : b->len);
  chat_buf *nb = chat_malloc(sizeof *nb + len + 1);
  if (nb == NULL)
    return NULL;
  nb->refs = 1;
  nb->len = (unsigned)len;
  nb->data[0] = '@';
  memcpy(nb->data + 1, tag, tl);
  nb->data[1 + tl] = tagged ? ';' : ' ';
  if (tagged)
    memcpy(nb->data + 2 + tl, b->data + 1, b->len - 1);
  else
    memcpy(nb->data + 2 + tl, b->data, b->len);
  nb->data[len] = '\0';
  return nb;
}
