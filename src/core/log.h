#ifndef PX_CORE_LOG_H
#define PX_CORE_LOG_H
#include "plexus/log.h"
#endif
