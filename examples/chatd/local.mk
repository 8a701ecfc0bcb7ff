# hark-chatd and hark-chatload: rules live here (included by the top
# Makefile.am).
bin_PROGRAMS += examples/chatd/hark-chatd examples/chatd/hark-chatload

chatd_core_sources = \
	examples/chatd/chatd.h \
	examples/chatd/alloc.h examples/chatd/alloc.c \
	examples/chatd/log.h examples/chatd/log.c \
	examples/chatd/proto.h examples/chatd/proto.c \
	examples/chatd/names.c \
	examples/chatd/tags.c \
	examples/chatd/user.c \
	examples/chatd/session.c \
	examples/chatd/channel.c \
	examples/chatd/chanmodes.c \
	examples/chatd/cmd.h \
	examples/chatd/commands.c \
	examples/chatd/registration.c \
	examples/chatd/modes.c \
	examples/chatd/queries.c \
	examples/chatd/who.c \
	examples/chatd/oper.c \
	examples/chatd/monitor.c \
	examples/chatd/server.c

# Federation beside the core: its own files, wired in by server.c alone.
chatd_core_sources += examples/chatd/federation.h \
	examples/chatd/fed.h examples/chatd/fed_link.c \
	examples/chatd/fed_out.c examples/chatd/fed_in.c \
	examples/chatd/fed_lua.c \
	examples/chatd/tls.h examples/chatd/tls.c \
	examples/chatd/redis.h examples/chatd/redis.c
if HAVE_HIREDIS
CHATD_HIREDIS_LIBS = $(HIREDIS_LIBS)
endif
if HAVE_OPENSSL
CHATD_OPENSSL_LIBS = $(OPENSSL_LIBS)
endif
CHATD_REDIS_LIBS = $(CHATD_HIREDIS_LIBS) $(CHATD_OPENSSL_LIBS) $(CRYPT_LIBS)
CHATD_FED_CFLAGS = $(HIREDIS_CFLAGS) $(OPENSSL_CFLAGS)

examples_chatd_hark_chatd_SOURCES = $(chatd_core_sources) \
	examples/chatd/main.c
examples_chatd_hark_chatd_CPPFLAGS = $(AM_CPPFLAGS) $(CHATD_FED_CFLAGS)
examples_chatd_hark_chatd_CFLAGS = $(AM_CFLAGS)
examples_chatd_hark_chatd_LDADD = libhark.la $(UV_LIBS) $(CHATD_REDIS_LIBS)

examples_chatd_hark_chatload_SOURCES = examples/chatd/chatload.c
examples_chatd_hark_chatload_CPPFLAGS = $(AM_CPPFLAGS)
examples_chatd_hark_chatload_CFLAGS = $(AM_CFLAGS)
examples_chatd_hark_chatload_LDADD = $(UV_LIBS) -lm

RUN_PROGRAM = examples/chatd/hark-chatd$(EXEEXT)
RUN_COMMAND = ./examples/chatd/hark-chatd$(EXEEXT) --listen 127.0.0.1:6667

# ---- tests -------------------------------------------------------------
chatd_tests = tests/test-chatd-proto tests/test-chatd
check_PROGRAMS += $(chatd_tests)
TESTS += $(chatd_tests) tests/chatd/irc-client.sh tests/chatd/test-irc.py \
	tests/chatd/test-abuse.py
EXTRA_DIST += tests/chatd/irc-client.sh tests/chatd/client.h \
	tests/chatd/test-irc.py tests/chatd/ircclient.py \
	tests/chatd/test-abuse.py
# irssi, headless: skipped when irssi is not installed
TESTS += tests/chatd/test-irssi.sh
EXTRA_DIST += tests/chatd/test-irssi.sh

tests_test_chatd_proto_SOURCES = tests/chatd/test-proto.c \
	examples/chatd/proto.h examples/chatd/proto.c
tests_test_chatd_proto_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/examples/chatd
tests_test_chatd_proto_CFLAGS = $(TEST_CFLAGS)
tests_test_chatd_proto_LDADD = $(TEST_LDADD)

tests_test_chatd_SOURCES = tests/chatd/test-chatd.c tests/chatd/client.h \
	$(chatd_core_sources)
tests_test_chatd_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/examples/chatd \
	$(CHATD_FED_CFLAGS)
tests_test_chatd_CFLAGS = $(TEST_CFLAGS)
tests_test_chatd_LDADD = $(TEST_LDADD) $(CHATD_REDIS_LIBS)

# Federation: a redis-server and daemons as child processes (skipped when
# redis-server is not installed): behaviour, faults, security.
EXTRA_DIST += examples/chatd/federation-bench.sh tests/chatd/fednet.h
if HAVE_HIREDIS
fed_tests = tests/test-federation tests/test-fed-faults \
	tests/test-fed-security
check_PROGRAMS += $(fed_tests)
TESTS += $(fed_tests)
tests_test_federation_SOURCES = tests/chatd/test-federation.c \
	tests/chatd/fednet.h
tests_test_federation_CFLAGS = $(TEST_CFLAGS)
tests_test_federation_LDADD = $(CHECK_LIBS)
tests_test_fed_faults_SOURCES = tests/chatd/test-fed-faults.c \
	tests/chatd/fednet.h
tests_test_fed_faults_CFLAGS = $(TEST_CFLAGS)
tests_test_fed_faults_LDADD = $(CHECK_LIBS)
tests_test_fed_security_SOURCES = tests/chatd/test-fed-security.c \
	tests/chatd/fednet.h
tests_test_fed_security_CFLAGS = $(TEST_CFLAGS)
tests_test_fed_security_LDADD = $(CHECK_LIBS)
endif
