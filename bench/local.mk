# Benchmarks: rules live here (included by the top Makefile.am).
#
#   make bench            builds bench/bench-signal and prints its table
#   bench/callgrind.sh    instructions per op under valgrind (repeatable)
#
# Built by plain `make` too (noinst), so CI keeps it compiling; it never
# runs as a test: times are not asserted anywhere.
noinst_PROGRAMS += bench/bench-signal
bench_bench_signal_SOURCES = bench/bench-signal.c
bench_bench_signal_CFLAGS = $(AM_CFLAGS) -O2
bench_bench_signal_LDADD = libhark.la $(UV_LIBS)
EXTRA_DIST += bench/callgrind.sh

.PHONY: bench
bench: bench/bench-signal$(EXEEXT)
	./bench/bench-signal$(EXEEXT) $(BENCH_FLAGS)
