/* probe: `gateway --health-check`, a tiny HTTP GET of /health on the gateway's own port for
 * Docker's HEALTHCHECK (the runtime image has no curl). */
#ifndef GATEWAY_PROBE_H
#define GATEWAY_PROBE_H

#include <stddef.h>

/* The host:port a local probe reaches for listen_addr: a wildcard host ("", "0.0.0.0", "*")
 * becomes 127.0.0.1, a concrete IPv4 host is kept. Returns the port, or -1 when listen_addr has
 * none; host gets the address text. */
int probe_local_target(const char *listen_addr, char *host, size_t hostlen);

/* GET path on host:port with one overall timeout (connect, send, read of the status line).
 * Returns the HTTP status, or -1 on a transport failure / time-out (msg says why). */
int probe_http_get(const char *host, int port, const char *path, int timeout_ms, char *msg,
                   size_t msglen);

/* The --health-check mode: GET /health on LISTEN_ADDR's port (2 s); prints one line; returns the
 * process exit code: 0 on 200, else 1. */
int probe_health_main(const char *listen_addr);

#endif
