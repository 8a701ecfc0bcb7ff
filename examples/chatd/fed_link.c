#include "chatd.h"
#include "federation.h"
#ifdef HARK_CHATD_REDIS
int fed_start(chat_server *srv) { return 0; }
void fed_stop(chat_server *srv) {}
void fed_free(chat_server *srv) {}
void fed_stats(chat_server *srv, char *buf, size_t cap) { if (cap) buf[0] = 0; }
#endif
