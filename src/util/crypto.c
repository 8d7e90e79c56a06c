/* OpenSSL wrappers (see crypto.h). */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "util/crypto.h"

int px__hmac_sha256(const void *key, size_t klen, const void *data, size_t n, uint8_t mac[32])
{
    unsigned int mlen = 0;
    if (!HMAC(EVP_sha256(), key, (int)klen, data, n, mac, &mlen) || mlen != 32)
        return -EIO;
    return 0;
}

void px__sha1(const void *data, size_t n, uint8_t md[20])
{
    SHA1(data, n, md);
}

void px__md5(const void *data, size_t n, uint8_t md[16])
{
    unsigned int len = 16;
    EVP_Digest(data, n, md, &len, EVP_md5(), NULL);
}

int px__memcmp_ct(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n);
}
