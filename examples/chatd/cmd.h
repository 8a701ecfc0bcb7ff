/* hark-chatd's command layer, inside: the handlers of the one command
 * table (commands.c), which live in files by concern, and the helpers
 * they share. Commands check, answer errors and call an operation of
 * user.c, channel.c or chanmodes.c; none knows who receives what the
 * operation emits. */
#ifndef CHATD_CMD_H
#define CHATD_CMD_H

#include "chatd.h"

typedef void (*command_fn)(chat_session *s, irc_msg *m);

/* commands.c: helpers */
/* 437: memory ran out for a command that changes state; nothing changed. */
void unavailable(chat_session *s, const char *what);
/* The channel name that s may act on as a member: a new reference, or NULL
 * after 403 or 442. */
chat_channel *member_channel(chat_session *s, const char *name);
/* Whether s is an operator of c; if not, 482 said so. */
bool require_op(chat_channel *c, chat_session *s);
/* Splits list (in place) into at most max distinct items (rfc1459-folded
 * duplicates dropped) in out; the first item beyond max gets 407 and the
 * rest are ignored. Returns how many are in out. */
size_t split_targets(chat_session *s, char *list, char **out, size_t max);
/* TARGMAX of JOIN and PART: as many channels as a client may be in. */
size_t join_targets_max(chat_server *srv);

/* commands.c: PING PONG QUIT JOIN PART KICK INVITE TOPIC PRIVMSG NOTICE
 * TAGMSG */

/* registration.c */
void cmd_pass(chat_session *s, irc_msg *m);
void cmd_nick(chat_session *s, irc_msg *m);
void cmd_user(chat_session *s, irc_msg *m);
void cmd_cap(chat_session *s, irc_msg *m);
/* Registers s when NICK, USER (and CAP END, if CAP began) are in. */
void registration_try(chat_session *s);

/* modes.c */
void cmd_mode(chat_session *s, irc_msg *m);

/* queries.c */
void cmd_names(chat_session *s, irc_msg *m);
void cmd_list(chat_session *s, irc_msg *m);
void cmd_ison(chat_session *s, irc_msg *m);
void cmd_userhost(chat_session *s, irc_msg *m);
void cmd_motd(chat_session *s, irc_msg *m);
void cmd_stats(chat_session *s, irc_msg *m);
void cmd_lusers(chat_session *s, irc_msg *m);
void cmd_version(chat_session *s, irc_msg *m);
void cmd_time(chat_session *s, irc_msg *m);
void cmd_info(chat_session *s, irc_msg *m);
void cmd_admin(chat_session *s, irc_msg *m);
void cmd_help(chat_session *s, irc_msg *m);
void cmd_links(chat_session *s, irc_msg *m);
void cmd_away(chat_session *s, irc_msg *m);
void cmd_setname(chat_session *s, irc_msg *m);
void send_lusers(chat_session *s);

/* who.c */
void cmd_who(chat_session *s, irc_msg *m);
void cmd_whois(chat_session *s, irc_msg *m);
void cmd_whowas(chat_session *s, irc_msg *m);

/* oper.c */
void cmd_oper(chat_session *s, irc_msg *m);
void cmd_kill(chat_session *s, irc_msg *m);
void cmd_wallops(chat_session *s, irc_msg *m);
void cmd_authenticate(chat_session *s, irc_msg *m);
/* Whether SASL PLAIN is offered (an accounts file is loaded). */
bool accounts_loaded(chat_server *srv);

/* monitor.c */
void cmd_monitor(chat_session *s, irc_msg *m);

#endif
