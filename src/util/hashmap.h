/* A string-keyed hash table of intrusive entries (chained, power-of-two buckets,
 * grows at load 1). The hub keeps channels in it on the hub thread and each
 * worker keeps its local channel index in one. Not thread-safe by design:
 * every table has one owner thread.
 *
 * Keys are channel names chosen by clients, so the hash is keyed: SipHash-1-3
 * with a random key drawn per table (px__hashmap_init). Nobody outside the
 * process can pick names that share a bucket; with the unkeyed FNV-1a used
 * before, a client could fill one chain with thousands of names and make
 * every lookup on it linear. */
#ifndef PX_UTIL_HASHMAP_H
#define PX_UTIL_HASHMAP_H

#include <stddef.h>
#include <stdint.h>

#include "util/siphash.h"

typedef struct px__hentry {
    struct px__hentry *next; /* bucket chain */
    uint64_t hash;
    const char *key; /* owned by the embedding struct */
    size_t key_len;
} px__hentry_t;

typedef struct px__chanmap {
    px__hentry_t **buckets;
    size_t nbuckets; /* power of two, 0 before the first insert */
    size_t count;
    px__sipkey_t key; /* random, per table, set by px__hashmap_init */
} px__hashmap_t;

/** The table's hash of a key (only meaningful within table `m`). */
uint64_t px__hashmap_hash(const px__hashmap_t *m, const char *key, size_t len);
/** Empty table with a fresh random hash key. */
void px__hashmap_init(px__hashmap_t *m);
void px__hashmap_dispose(px__hashmap_t *m); /* frees buckets, not entries */
px__hentry_t *px__hashmap_get(const px__hashmap_t *m, const char *key, size_t len);
/** Insert `e` (key, key_len set; not present yet). 0, or -ENOMEM only while the table has
 *  no buckets at all (a failed growth keeps the current table: longer chains). */
int px__hashmap_put(px__hashmap_t *m, px__hentry_t *e);
void px__hashmap_del(px__hashmap_t *m, px__hentry_t *e);
/** Iterate: pass NULL first; returns NULL at the end. Do not modify while iterating. */
px__hentry_t *px__hashmap_next(const px__hashmap_t *m, px__hentry_t *prev);

#endif
