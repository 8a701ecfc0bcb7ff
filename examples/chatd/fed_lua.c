/* hark-chatd federation: the Redis side, as Lua scripts. Each changes the
 * network's state and appends to the event stream in one atomic step, so
 * that the state (read as a snapshot) always matches a point of the
 * stream, and so that an event sent twice (a resend after a lost reply)
 * is applied once.
 *
 * Key layout. Every key starts with the hash tag {P} (--redis-prefix,
 * default "hark"): on a Redis Cluster the whole network is one slot, so
 * that scripts may touch all of it (one stream is one slot anyway); two
 * networks with different prefixes live side by side.
 *
 *   {P}:log         stream: the events, XADD MAXLEN (--redis-retention);
 *                   fields n (sequence), k (kind), o (origin node), i (its
 *                   incarnation), then the kind's fields, one value each
 *   {P}:seq         counter: n of the last event (a reader that sees a
 *                   jump in n has missed events: it resynchronizes)
 *   {P}:inc         counter: incarnations handed out
 *   {P}:nodes       hash node -> its current incarnation
 *   {P}:hb          hash node -> its last heartbeat (Redis time, ms)
 *   {P}:since       hash node -> start of its run of timely heartbeats
 *   {P}:epoch       when this stream began (a Redis that lost its data
 *                   begins another: nodes then read it from its start)
 *   {P}:acked       hash node -> the last outbox sequence applied
 *   {P}:nicks       hash folded nick -> uid (claims)
 *   {P}:guest       counter: guest nicks given out in collisions
 *   {P}:u:UID       hash nick fold user host real node away modes acct
 *   {P}:nu:NODE     set of the node's uids
 *   {P}:uc:UID      set of the user's folded channels
 *   {P}:chans       set of folded channel names
 *   {P}:c:CHAN      hash name key topic by at modes limit: a channel (CHAN
 *                   folded; modes: its flags, "nt" when absent)
 *   {P}:m:CHAN      hash uid -> "1" (operator) or "0": its members
 *   {P}:v:CHAN      hash uid -> "1": its voiced members
 *   {P}:l:CHAN      hash letter..mask -> setter: bans (b), exceptions (e),
 *                   invite exceptions (I)
 *
 * Every script takes KEYS[1] = {P}:log (so that a cluster client routes
 * it) and ARGV = prefix "{P}:", node, incarnation, retention, lease, and
 * its own arguments. */
#include "fed.h"

#ifdef HARK_CHATD_REDIS

/* The functions every script shares: K (a key of the network), now_ms
 * (Redis's clock), xadd (appends an event: a flat array of names and
 * values, numbered from {P}:seq), leave (a user out of a channel, which
 * goes with its last member), drop_user, drop_node (a node is gone: its
 * users, its claims, unregistered users' too, whose owners are
 * "node:...", then one event saying so), snapshot (the network's state
 * and the stream position it matches). */
/* clang-format off */
#define PRELUDE                                                                \
  "redis.replicate_commands() "                                                \
  "local P,node,inc,maxlen,lease=ARGV[1],ARGV[2],ARGV[3],ARGV[4],"             \
  "tonumber(ARGV[5]) "                                                         \
  "local function K(s) return P..s end "                                       \
  "local function now_ms() local t=redis.call('time') "                        \
  "return t[1]*1000+math.floor(t[2]/1000) end "                                \
  "local function xadd(fields) "                                               \
  "local n=redis.call('incr',K('seq')) "                                       \
  "local a={'xadd',K('log'),'maxlen'} "                                        \
  "if tonumber(maxlen)>=1000 then a[#a+1]='~' end "                            \
  "a[#a+1]=maxlen a[#a+1]='*' a[#a+1]='n' a[#a+1]=n "                          \
  "for i=1,#fields do a[#a+1]=fields[i] end "                                  \
  "return n,redis.call(unpack(a)) end "                                        \
  "local function leave(uid,cf) "                                              \
  "redis.call('hdel',K('m:')..cf,uid) redis.call('hdel',K('v:')..cf,uid) "    \
  "redis.call('srem',K('uc:')..uid,cf) "                                       \
  "if redis.call('hlen',K('m:')..cf)==0 then "                                 \
  "redis.call('del',K('c:')..cf,K('v:')..cf,K('l:')..cf) "                     \
  "redis.call('srem',K('chans'),cf) end end "                                  \
  "local function drop_user(uid) "                                             \
  "for _,cf in ipairs(redis.call('smembers',K('uc:')..uid)) do "               \
  "leave(uid,cf) end "                                                         \
  "local r=redis.call('hmget',K('u:')..uid,'fold','node') "                    \
  "if r[1] and redis.call('hget',K('nicks'),r[1])==uid then "                  \
  "redis.call('hdel',K('nicks'),r[1]) end "                                    \
  "if r[2] then redis.call('srem',K('nu:')..r[2],uid) end "                    \
  "redis.call('del',K('u:')..uid,K('uc:')..uid) end "                          \
  "local function drop_node(nd,why) "                                          \
  "local old=redis.call('hget',K('nodes'),nd) "                                \
  "for _,uid in ipairs(redis.call('smembers',K('nu:')..nd)) do "               \
  "drop_user(uid) end "                                                        \
  "redis.call('del',K('nu:')..nd) "                                            \
  "local c=redis.call('hgetall',K('nicks')) local pre=nd..':' "                \
  "for i=1,#c,2 do if string.sub(c[i+1],1,#pre)==pre then "                    \
  "redis.call('hdel',K('nicks'),c[i]) end end "                                \
  "redis.call('hdel',K('nodes'),nd) redis.call('hdel',K('hb'),nd) "            \
  "redis.call('hdel',K('acked'),nd) redis.call('hdel',K('since'),nd) "         \
  "xadd({'k','lost','o','','i','','node',nd,'x',why,'inc',old or ''}) end "    \
  "local function snapshot() "                                                 \
  "local last=redis.call('xrevrange',K('log'),'+','-','count',1) "             \
  "local lastid='0-0' if #last>0 then lastid=last[1][1] end "                  \
  "local n=tonumber(redis.call('get',K('seq')) or '0') "                       \
  "local users={} "                                                            \
  "for _,nd in ipairs(redis.call('hkeys',K('nodes'))) do "                     \
  "for _,uid in ipairs(redis.call('smembers',K('nu:')..nd)) do "               \
  "local r=redis.call('hmget',K('u:')..uid,'nick','user','host','real',"      \
  "'away','modes','acct') "                                                    \
  "users[#users+1]=uid users[#users+1]=nd "                                    \
  "for j=1,7 do users[#users+1]=r[j] or '' end "                               \
  "users[#users+1]=redis.call('hexists',K('u:')..uid,'away') end end "         \
  "local chans={} "                                                            \
  "for _,f in ipairs(redis.call('smembers',K('chans'))) do "                   \
  "local r=redis.call('hmget',K('c:')..f,'name','key','topic','by','at',"      \
  "'modes','limit') "                                                          \
  "local hk='0' if r[2] then hk='1' end "                                      \
  "chans[#chans+1]={r[1] or f,r[2] or '',hk,r[3] or '',r[4] or '',"            \
  "r[5] or '0',redis.call('hgetall',K('m:')..f),r[6] or 'nt',r[7] or '',"      \
  "redis.call('hgetall',K('v:')..f),redis.call('hgetall',K('l:')..f)} end "    \
  "return {lastid,n,users,chans} end "
/* clang-format on */

/* ARGV[6] sequence, ARGV[7] kind, then names and values; names starting
 * with '_' are for the script (folded names), not the stream. Replies n,
 * the event's sequence; {n, nick} when nick, a guest nick, replaced the
 * one asked for (taken while the network was split); 0: applied already;
 * -1: this incarnation is no longer registered. A 'release' gives a claim
 * back and appends nothing. */
static const char EMIT[] = PRELUDE
    "if redis.call('hget',K('nodes'),node)~=inc then return -1 end "
    "local last=tonumber(redis.call('hget',K('acked'),node) or '0') "
    "if tonumber(ARGV[6])<=last then return 0 end "
    "redis.call('hset',K('acked'),node,ARGV[6]) "
    "local kind=ARGV[7] local f={} local out={'k',kind,'o',node,'i',inc} "
    "for i=8,#ARGV,2 do f[ARGV[i]]=ARGV[i+1] "
    "if string.sub(ARGV[i],1,1)~='_' then "
    "out[#out+1]=ARGV[i] out[#out+1]=ARGV[i+1] end end "
    "local extra='' "
    "if kind=='release' then "
    "if redis.call('hget',K('nicks'),f._fold)==f.u then "
    "redis.call('hdel',K('nicks'),f._fold) end return 0 end "
    "if kind=='intro' or kind=='nick' then "
    "local ukey=K('u:')..f.u "
    "if kind=='nick' and redis.call('exists',ukey)==0 then "
    "local n=xadd(out) return n end "
    "local owner=redis.call('hget',K('nicks'),f._fold) "
    "if owner and owner~=f.u then "
    "local g,gf repeat g='Guest'..redis.call('incr',K('guest')) "
    "gf=string.lower(g) until redis.call('hexists',K('nicks'),gf)==0 "
    "extra=g f._fold=gf "
    "for i=1,#out,2 do if out[i]=='nick' then out[i+1]=g end end end "
    "if kind=='nick' then "
    "local of=redis.call('hget',ukey,'fold') "
    "if of and of~=f._fold and redis.call('hget',K('nicks'),of)==f.u then "
    "redis.call('hdel',K('nicks'),of) end "
    "redis.call('hset',ukey,'nick',extra~='' and extra or f.nick,"
    "'fold',f._fold) "
    "else "
    "redis.call('hset',ukey,'nick',extra~='' and extra or f.nick,"
    "'fold',f._fold,'user',f.user,'host',f.host,'real',f.real,'node',node,"
    "'acct',f.acct or '') "
    "redis.call('sadd',K('nu:')..node,f.u) end "
    "redis.call('hset',K('nicks'),f._fold,f.u) "
    "elseif kind=='quit' then drop_user(f.u) "
    "elseif kind=='join' then "
    "redis.call('hset',K('m:')..f._chan,f.u,f.op) "
    "redis.call('sadd',K('uc:')..f.u,f._chan) "
    "if redis.call('sadd',K('chans'),f._chan)==1 then "
    "redis.call('hset',K('c:')..f._chan,'name',f.c) end "
    "elseif kind=='part' then leave(f.u,f._chan) "
    "elseif kind=='kick' then leave(f.t,f._chan) "
    "elseif kind=='away' then local uk=K('u:')..f.u "
    "if redis.call('exists',uk)==1 then "
    "if f.x then redis.call('hset',uk,'away',f.x) "
    "else redis.call('hdel',uk,'away') end end "
    "elseif kind=='umode' or kind=='setname' then local uk=K('u:')..f.u "
    "if redis.call('exists',uk)==1 then "
    "if kind=='umode' then redis.call('hset',uk,'modes',f.all or '') "
    "else redis.call('hset',uk,'real',f.x) end end "
    "elseif kind=='kill' or kind=='wallops' or kind=='invite' then "
    "elseif redis.call('sismember',K('chans'),f._chan or '')==1 then "
    "if kind=='topic' then "
    "redis.call('hset',K('c:')..f._chan,'topic',f.x,'by',f.by,'at',f.at) "
    "elseif kind=='key' and f.x then "
    "redis.call('hset',K('c:')..f._chan,'key',f.x) "
    "elseif kind=='key' then redis.call('hdel',K('c:')..f._chan,'key') "
    "elseif kind=='op' and "
    "redis.call('hexists',K('m:')..f._chan,f.t)==1 then "
    "redis.call('hset',K('m:')..f._chan,f.t,f.v) "
    "elseif kind=='voice' and "
    "redis.call('hexists',K('m:')..f._chan,f.t)==1 then "
    "if f.v=='1' then redis.call('hset',K('v:')..f._chan,f.t,'1') "
    "else redis.call('hdel',K('v:')..f._chan,f.t) end "
    "elseif kind=='cmode' then local ck=K('c:')..f._chan "
    "if f.m=='l' then if f.v=='+' then redis.call('hset',ck,'limit',f.x) "
    "else redis.call('hdel',ck,'limit') end else "
    "local cur=redis.call('hget',ck,'modes') or 'nt' "
    "local has=string.find(cur,f.m,1,true) "
    "if f.v=='+' and not has then cur=cur..f.m "
    "elseif f.v=='-' and has then cur=string.gsub(cur,f.m,'') end "
    "redis.call('hset',ck,'modes',cur) end "
    "elseif kind=='list' then local lk=K('l:')..f._chan "
    "if f.v=='+' then redis.call('hset',lk,f.m..f.x,f.by or '') "
    "else redis.call('hdel',lk,f.m..f.x) end end end "
    "local n=xadd(out) if extra~='' then return {n,extra} end return n";

/* A node (re)starts: its previous incarnation's users go (an event says
 * so), it gets a new incarnation. Replies {inc, lastid, n, users, chans,
 * epoch}: epoch names this stream (a Redis that lost its data starts
 * another). */
static const char REGISTER[] = PRELUDE
    "if redis.call('hexists',K('nodes'),node)==1 then "
    "drop_node(node,'restarted') end "
    "local now=now_ms() "
    "redis.call('setnx',K('epoch'),now) "
    "local i=redis.call('incr',K('inc')) "
    "redis.call('hset',K('nodes'),node,i) "
    "redis.call('hset',K('hb'),node,now) "
    "redis.call('hset',K('since'),node,now) "
    "redis.call('hdel',K('acked'),node) "
    "local s=snapshot() "
    "return {tostring(i),s[1],s[2],s[3],s[4],redis.call('get',K('epoch'))}";

/* A heartbeat. With ARGV[6] == '1' (the caller has been answered
 * promptly for a whole lease) the nodes whose last heartbeat is older
 * than the lease are declared lost, if the caller's own heartbeats, in
 * Redis's time, have come without a gap of more than half a lease for a
 * whole lease: after a stall of Redis (or a heartbeat held up on the way)
 * everyone's heartbeats look old, and nobody is judged until they have
 * had a lease to come back. Replies {0} when this incarnation is not
 * registered, else {1, lost node...}. */
static const char BEAT[] =
    PRELUDE "if redis.call('hget',K('nodes'),node)~=inc then return {0} end "
            "local now=now_ms() "
            "local prev=tonumber(redis.call('hget',K('hb'),node) or '0') "
            "local since=tonumber(redis.call('hget',K('since'),node) or now) "
            "if now-prev>lease/2 then since=now "
            "redis.call('hset',K('since'),node,now) end "
            "redis.call('hset',K('hb'),node,now) "
            "local res={1} "
            "if ARGV[6]=='1' and now-since>=lease then "
            "local hb=redis.call('hgetall',K('hb')) "
            "for i=1,#hb,2 do "
            "if hb[i]~=node and now-tonumber(hb[i+1])>lease then "
            "drop_node(hb[i],'lost') res[#res+1]=hb[i] end end end "
            "return res";

/* ARGV[6]: 'claim' fold uid (1 granted, 0 taken, -1 not registered),
 * 'release' fold uid, 'snapshot' ({0, lastid, n, users, chans}), 'bye'. */
static const char MISC[] =
    PRELUDE "local op=ARGV[6] "
            "if op=='snapshot' then local s=snapshot() "
            "return {0,s[1],s[2],s[3],s[4]} end "
            "if redis.call('hget',K('nodes'),node)~=inc then return -1 end "
            "if op=='claim' then local o=redis.call('hget',K('nicks'),ARGV[7]) "
            "if o and o~=ARGV[8] then return 0 end "
            "redis.call('hset',K('nicks'),ARGV[7],ARGV[8]) return 1 end "
            "if op=='release' then "
            "if redis.call('hget',K('nicks'),ARGV[7])==ARGV[8] then "
            "redis.call('hdel',K('nicks'),ARGV[7]) end return 1 end "
            "if op=='bye' then drop_node(node,'shut down') return 1 end "
            "return redis.error_reply('unknown op')";

const char *const fed_scripts[NSCRIPTS] = {EMIT, REGISTER, BEAT, MISC};

#endif
