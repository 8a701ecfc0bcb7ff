/* The library's version at run time: what the program is running
 * against, which may differ from the header it was compiled with. */
#include "hark.h"

unsigned hark_version(void) { return HARK_VERSION_HEX; }

const char *hark_version_string(void) { return HARK_VERSION_STRING; }
