/* placeholder while the layer is written */
#include "internal.h"
