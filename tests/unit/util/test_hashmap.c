/* Unit tests for the channel map (src/hub/chanmap.c).
 *
 * Channel names come from clients, so the table must hold up against names
 * chosen to collide: 50 000 names sharing a 200-byte prefix, and 1 000 names
 * that all land in one bucket under the unkeyed FNV-1a the map used to hash
 * with (found by brute force, as an attacker would). With the keyed SipHash
 * every chain stays short. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/hashmap.h"

typedef struct chan {
    px__hentry_t e;
    char name[256];
    int seen;
} chan_t;

static size_t longest_chain(const px__hashmap_t *m)
{
    size_t worst = 0;
    for (size_t b = 0; b < m->nbuckets; b++) {
        size_t n = 0;
        for (px__hentry_t *e = m->buckets[b]; e; e = e->next)
            n++;
        if (n > worst)
            worst = n;
    }
    return worst;
}

static void test_long_common_prefix(void **state)
{
    (void)state;
    enum { N = 50000 };
    chan_t *c = calloc(N, sizeof *c);
    assert_non_null(c);
    char prefix[201];
    memset(prefix, 'x', 200);
    prefix[200] = '\0';
    px__hashmap_t m;
    px__hashmap_init(&m);
    for (int i = 0; i < N; i++) {
        snprintf(c[i].name, sizeof c[i].name, "org/acme/%s/%d", prefix, i);
        c[i].e.key = c[i].name;
        c[i].e.key_len = strlen(c[i].name);
        assert_null(px__hashmap_get(&m, c[i].name, c[i].e.key_len));
        assert_int_equal(px__hashmap_put(&m, &c[i].e), 0);
    }
    assert_int_equal(m.count, N);
    for (int i = 0; i < N; i++)
        assert_ptr_equal(px__hashmap_get(&m, c[i].name, c[i].e.key_len), &c[i].e);
    /* A name that differs only in its last byte, or is a prefix of one. */
    assert_null(px__hashmap_get(&m, c[5].name, c[5].e.key_len - 1));
    char other[256];
    memcpy(other, c[7].name, c[7].e.key_len + 1);
    other[c[7].e.key_len - 1] ^= 1;
    px__hentry_t *e = px__hashmap_get(&m, other, c[7].e.key_len);
    assert_true(e == NULL || e != &c[7].e);
    print_message("  %d names, %zu buckets, longest chain %zu\n", N, m.nbuckets, longest_chain(&m));
    assert_true(longest_chain(&m) <= 16);
    /* Iterate: every entry once. */
    size_t n = 0;
    for (px__hentry_t *it = px__hashmap_next(&m, NULL); it; it = px__hashmap_next(&m, it)) {
        chan_t *ch = (chan_t *)it;
        assert_int_equal(ch->seen, 0);
        ch->seen = 1;
        n++;
    }
    assert_int_equal(n, N);
    /* Delete every other one. */
    for (int i = 0; i < N; i += 2)
        px__hashmap_del(&m, &c[i].e);
    assert_int_equal(m.count, N / 2);
    for (int i = 0; i < N; i++)
        assert_ptr_equal(px__hashmap_get(&m, c[i].name, c[i].e.key_len), i % 2 ? &c[i].e : NULL);
    px__hashmap_dispose(&m);
    free(c);
}

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static void test_flooding_names(void **state)
{
    (void)state;
    /* 1 000 names whose FNV-1a hashes share their low 12 bits: under the old
     * hash they all went to one bucket of a table up to 4 096 buckets wide,
     * so each lookup walked a chain of 1 000. */
    enum { N = 1000 };
    chan_t *c = calloc(N, sizeof *c);
    assert_non_null(c);
    unsigned long k = 0;
    for (int i = 0; i < N; i++) {
        for (;; k++) {
            int len = snprintf(c[i].name, sizeof c[i].name, "room:%lx", k);
            if ((fnv1a(c[i].name, (size_t)len) & 0xfff) == 0)
                break;
        }
        k++;
        c[i].e.key = c[i].name;
        c[i].e.key_len = strlen(c[i].name);
    }
    px__hashmap_t m;
    px__hashmap_init(&m);
    for (int i = 0; i < N; i++)
        assert_int_equal(px__hashmap_put(&m, &c[i].e), 0);
    for (int i = 0; i < N; i++)
        assert_ptr_equal(px__hashmap_get(&m, c[i].name, c[i].e.key_len), &c[i].e);
    size_t worst = longest_chain(&m);
    print_message("  %d FNV-colliding names in %zu buckets: longest chain %zu\n", N, m.nbuckets,
                  worst);
    assert_true(worst <= 16);
    px__hashmap_dispose(&m);
    free(c);
}

static void test_keys_differ_per_table(void **state)
{
    (void)state;
    px__hashmap_t a, b;
    px__hashmap_init(&a);
    px__hashmap_init(&b);
    int differ = 0;
    for (int i = 0; i < 8; i++) {
        char name[16];
        int n = snprintf(name, sizeof name, "room:%d", i);
        differ += px__hashmap_hash(&a, name, (size_t)n) != px__hashmap_hash(&b, name, (size_t)n);
    }
    assert_true(differ >= 7);
    px__hashmap_dispose(&a);
    px__hashmap_dispose(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_long_common_prefix),
        cmocka_unit_test(test_flooding_names),
        cmocka_unit_test(test_keys_differ_per_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
