/* Glob matching (see glob.h). */
#include <stdint.h>

#include "util/glob.h"

int px__glob_match(const char *pattern, size_t plen, const char *s, size_t slen)
{
    /* Greedy with one backtrack point: on mismatch, let the most recent '*' swallow one
     * more byte. Earlier stars never need revisiting, so no recursion and no blowup. */
    size_t pi = 0, si = 0, star = SIZE_MAX, star_si = 0;
    while (si < slen) {
        if (pi < plen && pattern[pi] == '*') {
            star = pi++;
            star_si = si;
        } else if (pi < plen && (pattern[pi] == '?' || pattern[pi] == s[si])) {
            pi++;
            si++;
        } else if (star != SIZE_MAX) {
            pi = star + 1;
            si = ++star_si;
        } else {
            return 0;
        }
    }
    while (pi < plen && pattern[pi] == '*')
        pi++;
    return pi == plen;
}
