/* What the HTTP layer offers the layers above it inside the library (the WebSocket
 * layer): switching a request's connection to another protocol. Not installed. */
#ifndef PX_HTTP_UPGRADE_H
#define PX_HTTP_UPGRADE_H

#include "plexus/http.h"

/* Switch the request's connection to `proto` with `state` (HTTP/1.1 Upgrade), after
 * which the caller writes the 101 itself on *out (the connection), then the new protocol
 * gets the bytes after the head. The request is answered. -ENOTSUP when the owner cannot
 * (HTTP/2), -EINVAL when not now (answered, or a pipelined request is pending). */
int px__req_upgrade(px_req_t *req, const px_protocol_t *proto, void *state, px_conn_t **out);

#endif
