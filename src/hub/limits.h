/* The hub's fixed bounds, in one place (the store, the hub core and front-ends use them). */
#ifndef PX_HUB_LIMITS_H
#define PX_HUB_LIMITS_H

#include <stdint.h>

/** Channel names are 1..200 bytes (the hub's alphabet: px__channel_name_ok; the store
 *  never interprets them). */
#define PX__CHANNEL_MAX 200
/** Epochs are 1..32 printable ASCII bytes (0x21..0x7e except '"' and '\\'), e.g. 16 hex
 *  chars; they go into logs and JSON unescaped. */
#define PX__EPOCH_MAX 32
/** Offsets are 1..PX__OFFSET_MAX (stored as signed 64-bit SQL integers). */
#define PX__OFFSET_MAX ((uint64_t)INT64_MAX)
/** A client's id in presence: 16 hex chars. */
#define PX__CLIENT_ID_LEN 16
/** A publisher's user id carried with a message (px__hub_msg_new_user): at most this long. */
#define PX__USER_MAX 1024

#endif
