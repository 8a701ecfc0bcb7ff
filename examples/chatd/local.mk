# hark-chatd: rules live here (included by the top Makefile.am).
RUN_PROGRAM = examples/signals$(EXEEXT)
RUN_COMMAND = ./examples/signals$(EXEEXT)
