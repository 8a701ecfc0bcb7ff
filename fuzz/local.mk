# libFuzzer harnesses: rules live here (included by the top Makefile.am).
#
#   make fuzz                builds fuzz/fuzz-parser, fuzz/fuzz-session,
#                            fuzz/fuzz-model with clang (-fsanitize=fuzzer,
#                            address,undefined), whatever CC configure chose
#   make fuzz-run            runs each for FUZZ_SECONDS (default 60) on its
#                            committed corpus; fails on a crash
#   fuzz/run.sh SECONDS [NAME...]   the same, by hand
#
# Each harness is one clang command: the harness plus the lib/ and
# examples/chatd/ sources it needs, never the libtool objects (built by
# CC, without the fuzzer's instrumentation).
FUZZ_CC = clang
FUZZ_SANITIZE = -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=undefined
FUZZ_CFLAGS = -g -O1 $(FUZZ_SANITIZE) $(HARK_CFLAGS) -pthread \
	-DHARK_BUILDING -I$(top_builddir) -I$(top_builddir)/include \
	-I$(top_srcdir)/include \
	-I$(top_srcdir)/lib -I$(top_srcdir)/examples/chatd $(UV_CFLAGS)
FUZZ_LIBS = $(UV_LIBS) -lpthread
FUZZ_SECONDS = 60

fuzz_headers = include/hark.h include/hark/version.h lib/internal.h \
	examples/chatd/chatd.h examples/chatd/proto.h examples/chatd/fuzz_seam.h
# The .c files of a list, under $(top_srcdir) (no GNU make functions).
fuzz_c = for f in $$list; do case $$f in *.c) \
	srcs="$$srcs $(top_srcdir)/$$f";; esac; done

fuzz_programs = fuzz/fuzz-parser fuzz/fuzz-session fuzz/fuzz-model

fuzz/fuzz-parser: fuzz/fuzz-parser.c examples/chatd/proto.c $(fuzz_headers)
	@$(MKDIR_P) fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $(top_srcdir)/fuzz/fuzz-parser.c \
		$(top_srcdir)/examples/chatd/proto.c

fuzz/fuzz-session: fuzz/fuzz-session.c $(libhark_la_SOURCES) \
		$(chatd_core_sources) examples/chatd/fuzz_seam.c $(fuzz_headers)
	@$(MKDIR_P) fuzz
	@srcs=; list='$(libhark_la_SOURCES) $(chatd_core_sources) \
		examples/chatd/fuzz_seam.c'; $(fuzz_c); \
	echo "$(FUZZ_CC) ... -o $@ fuzz/fuzz-session.c$$srcs"; \
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $(top_srcdir)/fuzz/fuzz-session.c \
		$$srcs $(FUZZ_LIBS)

fuzz/fuzz-model: fuzz/fuzz-model.c tests/model.h tests/util.h \
		$(libhark_la_SOURCES) \
		$(fuzz_headers)
	@$(MKDIR_P) fuzz
	@srcs=; list='$(libhark_la_SOURCES)'; $(fuzz_c); \
	echo "$(FUZZ_CC) ... -o $@ fuzz/fuzz-model.c$$srcs"; \
	$(FUZZ_CC) $(FUZZ_CFLAGS) -I$(top_srcdir)/tests $(CHECK_CFLAGS) -o $@ \
		$(top_srcdir)/fuzz/fuzz-model.c $$srcs $(CHECK_LIBS) $(FUZZ_LIBS)

fuzz: $(fuzz_programs)

fuzz-run: fuzz
	FUZZ_BUILD=. $(top_srcdir)/fuzz/run.sh $(FUZZ_SECONDS)

.PHONY: fuzz fuzz-run
CLEANFILES += $(fuzz_programs)
clean-local: clean-fuzz
clean-fuzz:
	-rm -rf fuzz/work fuzz/artifacts
.PHONY: clean-fuzz

EXTRA_DIST += fuzz/fuzz-parser.c fuzz/fuzz-session.c fuzz/fuzz-model.c \
	fuzz/run.sh fuzz/irc.dict fuzz/corpus \
	examples/chatd/fuzz_seam.c examples/chatd/fuzz_seam.h
