# Daemon fault and soak tests: rules live here (included by the top Makefile.am).
# The daemon runs in the test process, built from the same sources as
# tests/test-chatd (chatd_core_sources, examples/chatd/local.mk).
check_PROGRAMS += tests/chatd/test-faults
TESTS += tests/chatd/test-faults
tests_chatd_test_faults_SOURCES = tests/chatd/test-faults.c \
	tests/chatd/client.h $(chatd_core_sources)
tests_chatd_test_faults_CPPFLAGS = $(AM_CPPFLAGS) \
	-I$(top_srcdir)/examples/chatd $(CHATD_FED_CFLAGS)
tests_chatd_test_faults_CFLAGS = $(TEST_CFLAGS)
tests_chatd_test_faults_LDADD = $(TEST_LDADD) $(CHATD_REDIS_LIBS)
