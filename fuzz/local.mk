# libFuzzer harnesses: rules live here (included by the top Makefile.am).
