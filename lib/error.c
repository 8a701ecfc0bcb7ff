/* Error names. */
#include "internal.h"

const char *hark_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
  case HARK_ENOENT:
    return "HARK_ENOENT: no such entry, or the object has died";
  case HARK_EAGAIN:
    return "HARK_EAGAIN: resource temporarily unavailable (queue full)";
  case HARK_ENOMEM:
    return "HARK_ENOMEM: out of memory";
  case HARK_EBUSY:
    return "HARK_EBUSY: resource busy";
  case HARK_EEXIST:
    return "HARK_EEXIST: already exists";
  case HARK_EINVAL:
    return "HARK_EINVAL: invalid argument";
  case HARK_ERANGE:
    return "HARK_ERANGE: out of range";
  case HARK_ECANCELED:
    return "HARK_ECANCELED: operation canceled";
  default:
    return "unknown error";
  }
}
