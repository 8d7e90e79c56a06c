/* Internal allocation helpers. px__malloc & co. go through the pluggable allocator
 * (px_set_allocator). Sizes that come from the network must use the fallible
 * calls and check the result; fixed-size internal objects may use px__xmalloc,
 * which aborts on OOM (h2o h2o_mem_alloc habit). */
#ifndef PX_CORE_ALLOC_H
#define PX_CORE_ALLOC_H

#include <stddef.h>
#include "plexus/common.h"

PX_MUST_CHECK void *px__malloc(size_t n);
PX_MUST_CHECK void *px__calloc(size_t nmemb, size_t size);
PX_MUST_CHECK void *px__realloc(void *p, size_t n);
void px__free(void *p);
void *px__xmalloc(size_t n);
void *px__xcalloc(size_t nmemb, size_t size);
char *px__xstrdup(const char *s);
/** A copy of n bytes (for small, bounded sizes: aborts on OOM like px__xmalloc). */
void *px__xmemdup(const void *p, size_t n);

#endif
