/* A string-keyed hash table of intrusive entries (chained, power-of-two buckets,
 * grows at load 1). The hub keeps channels in it on the hub thread and each
 * worker keeps its local channel index in one. Not thread-safe by design:
 * every table has one owner thread.
 *
 * Keys are channel names chosen by clients, so the hash is keyed: SipHash-1-3
 * with a random key drawn per table (px__chanmap_init). Nobody outside the
 * process can pick names that share a bucket; with the unkeyed FNV-1a used
 * before, a client could fill one chain with thousands of names and make
 * every lookup on it linear. */
#ifndef PX_HUB_CHANMAP_H
#define PX_HUB_CHANMAP_H

#include <stddef.h>
#include <stdint.h>

#include "core/siphash.h"

typedef struct px__centry {
    struct px__centry *next; /* bucket chain */
    uint64_t hash;
    const char *key; /* owned by the embedding struct */
    size_t key_len;
} px__centry_t;

typedef struct px__chanmap {
    px__centry_t **buckets;
    size_t nbuckets; /* power of two, 0 before the first insert */
    size_t count;
    px__sipkey_t key; /* random, per table, set by px__chanmap_init */
} px__chanmap_t;

/** The table's hash of a key (only meaningful within table `m`). */
uint64_t px__chanmap_hash(const px__chanmap_t *m, const char *key, size_t len);
/** Empty table with a fresh random hash key. */
void px__chanmap_init(px__chanmap_t *m);
void px__chanmap_dispose(px__chanmap_t *m); /* frees buckets, not entries */
px__centry_t *px__chanmap_get(const px__chanmap_t *m, const char *key, size_t len);
/** Insert `e` (key, key_len set; not present yet). 0, or -ENOMEM only while the table has
 *  no buckets at all (a failed growth keeps the current table: longer chains). */
int px__chanmap_put(px__chanmap_t *m, px__centry_t *e);
void px__chanmap_del(px__chanmap_t *m, px__centry_t *e);
/** Iterate: pass NULL first; returns NULL at the end. Do not modify while iterating. */
px__centry_t *px__chanmap_next(const px__chanmap_t *m, px__centry_t *prev);

#endif
