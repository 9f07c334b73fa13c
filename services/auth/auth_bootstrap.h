/* auth_bootstrap: makes sure BOOTSTRAP_ADMIN_EMAIL exists with a credential and role admin.
 * Runs in the background and retries (with backoff) until the user and permission services
 * answer, since they may start after auth. Idempotent at every start. */
#ifndef AUTH_BOOTSTRAP_H
#define AUTH_BOOTSTRAP_H

#include "auth_service.h"

typedef struct auth_bootstrap auth_bootstrap;

/* Copies email and password (the copy is wiped when done). */
auth_bootstrap *auth_bootstrap_start(auth_service *svc, const char *email, const char *password);
/* Stops retrying and joins. NULL ok. */
void auth_bootstrap_stop(auth_bootstrap *b);

#endif
