# Benchmarks: rules live here (included by the top Makefile.am).
#
#   make bench            dispatch (bench-signal, hark and every peer found)
#                         and cross-thread posts (bench-post); one table
#                         each; data in bench-signal.dat, bench-post.dat
#   make bench-callgrind  instructions per op under valgrind (repeatable)
#   make bench-post       the cross-thread table alone (bench-post)
#   make bench-post-callgrind  instructions per message of each side of it
#   make bench-chat       hark-chatd against ngircd, inspircd and Redis
#                         pub/sub under hark-chatload; data in bench-chat.dat
#   make bench-plot       gnuplot: the .dat files -> docs/*.png
#   bench/install-peers.sh  the peers and tools, from Debian packages
#
# Built by plain `make` too (noinst), so CI keeps them compiling; they
# never run as tests: times are not asserted anywhere. A peer's
# translation unit is compiled and linked in only when configure found
# it; bench-signal lists a peer it lacks as skipped.
noinst_PROGRAMS += bench/bench-signal bench/bench-post bench/bench-leaks

# bench-signal links as C++ (libsigc++, Boost) even without those peers:
# bench/peers.cc is always there, so the linker does not depend on them.
bench_bench_signal_SOURCES = bench/bench-signal.c bench/peers.h \
	bench/peers.cc
bench_bench_signal_CPPFLAGS = $(AM_CPPFLAGS)
bench_bench_signal_CFLAGS = $(AM_CFLAGS) -O2 -pthread
bench_bench_signal_CXXFLAGS = $(AM_CXXFLAGS) -O2 -std=c++17 $(BENCH_CXXWARN)
bench_bench_signal_LDADD = libhark.la $(UV_LIBS) -lpthread
if HAVE_GOBJECT
bench_bench_signal_SOURCES += bench/peer-gobject.c
bench_bench_signal_CPPFLAGS += -DBENCH_HAVE_GOBJECT $(GOBJECT_CFLAGS)
bench_bench_signal_LDADD += $(GOBJECT_LIBS)
endif
if HAVE_SIGCXX
bench_bench_signal_SOURCES += bench/peer-sigc.cc
bench_bench_signal_CPPFLAGS += -DBENCH_HAVE_SIGCXX $(SIGCXX_CFLAGS)
bench_bench_signal_LDADD += $(SIGCXX_LIBS)
endif
if HAVE_BOOST
bench_bench_signal_SOURCES += bench/peer-boost.cc
bench_bench_signal_CPPFLAGS += -DBENCH_HAVE_BOOST
endif

bench_bench_leaks_SOURCES = bench/bench-leaks.c
bench_bench_leaks_CFLAGS = $(AM_CFLAGS) -O2
bench_bench_leaks_LDADD = libhark.la $(UV_LIBS)

bench_bench_post_SOURCES = bench/bench-post.c
bench_bench_post_CFLAGS = $(AM_CFLAGS) -O2 -pthread
bench_bench_post_LDADD = libhark.la $(UV_LIBS) -lpthread

EXTRA_DIST += bench/callgrind.sh bench/callgrind-post.sh \
	bench/install-peers.sh bench/bench-chat.sh \
	bench/plot.sh bench/peer-gobject.c bench/peer-sigc.cc \
	bench/peer-boost.cc
CLEANFILES += bench-signal.dat bench-post.dat bench-chat.dat

BENCH_FLAGS =
BENCH_POST_FLAGS =
.PHONY: bench bench-callgrind bench-chat bench-plot bench-post \
	bench-post-callgrind
bench: bench/bench-signal$(EXEEXT) bench/bench-post$(EXEEXT) \
		bench/bench-leaks$(EXEEXT)
	./bench/bench-signal$(EXEEXT) --data bench-signal.dat $(BENCH_FLAGS)
	./bench/bench-post$(EXEEXT) --data bench-post.dat $(BENCH_POST_FLAGS)
	./bench/bench-leaks$(EXEEXT)

bench-callgrind: bench/bench-signal$(EXEEXT)
	BENCH=bench/bench-signal$(EXEEXT) $(SHELL) $(srcdir)/bench/callgrind.sh

bench-post: bench/bench-post$(EXEEXT)
	./bench/bench-post$(EXEEXT) --data bench-post.dat $(BENCH_POST_FLAGS)

bench-post-callgrind: bench/bench-post$(EXEEXT)
	BENCH=bench/bench-post$(EXEEXT) $(SHELL) $(srcdir)/bench/callgrind-post.sh

bench-chat: examples/chatd/hark-chatd$(EXEEXT) \
		examples/chatd/hark-chatload$(EXEEXT)
	BUILDDIR=. $(SHELL) $(srcdir)/bench/bench-chat.sh --data bench-chat.dat

bench-plot:
	$(SHELL) $(srcdir)/bench/plot.sh . $(srcdir)/docs
