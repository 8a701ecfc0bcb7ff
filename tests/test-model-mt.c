/* placeholder while the suite is written */
#include "util.h"
int main(void) { return test_run(suite_create("model-mt")); }
