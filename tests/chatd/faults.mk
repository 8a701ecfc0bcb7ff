# Daemon fault and soak tests: rules live here (included by the top Makefile.am).
