/* Glob patterns for channel permissions (JWT "channels" claims). Pure. */
#ifndef PX_UTIL_GLOB_H
#define PX_UTIL_GLOB_H

#include <stddef.h>

/**
 * Glob match over bytes: '*' matches any run (including empty and including ':' or '.'),
 * '?' exactly one byte, everything else itself; no escapes. Iterative with one backtrack
 * point: O(plen * slen) worst case, linear for patterns with a single '*'. Returns 1 or 0.
 */
int px__glob_match(const char *pattern, size_t plen, const char *s, size_t slen);

#endif
