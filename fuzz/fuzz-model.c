/* libFuzzer harness for the model test's operation-sequence interpreter
 * (tests/model.h): the input is the operation bytes (MODEL_OPSIZE per
 * operation), run against hark and the reference model; any disagreement,
 * and any memory error or leak in between, is a crash. To see a crashing
 * input's operations: HARK_MODEL_TRACE=1 fuzz/fuzz-model CRASH-FILE. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "model.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  /* model_init() without its ck_assert, which needs a Check runner */
  if (hark_replace_allocator(test_malloc, test_realloc, test_calloc,
                             test_free) != 0)
    abort();
  if (getenv("HARK_MODEL_TRACE") != NULL)
    model_trace = stderr;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  model_report r;
  if (model_run(data, size, &r) != 0) {
    fprintf(stderr,
            "fuzz-model: hark and the model disagree at operation %zu of "
            "%zu (%ld receiver calls): %s\n",
            r.step, r.steps, r.calls, r.msg);
    abort();
  }
  return 0;
}
