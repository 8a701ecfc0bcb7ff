// peers.cc: always linked into bench-signal, so that it links with the
// C++ driver (libstdc++) whether or not the C++ peers were found; the
// peers themselves live in peer-*.c*, each built only when found.
#include "peers.h"
