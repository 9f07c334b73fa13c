/* auth_bootstrap: the bootstrap-admin thread; see auth_bootstrap.h. */
#include "auth_bootstrap.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "common/log.h"
#include "common/mem.h"

struct auth_bootstrap {
    auth_service *svc;
    char *email, *password;
    atomic_bool stop;
    pthread_t thread;
};

static void *bootstrap_main(void *arg)
{
    auth_bootstrap *b = arg;
    int wait_ms = 200;
    for (int attempt = 1; !atomic_load(&b->stop); attempt++) {
        err_info e;
        err_clear(&e);
        err_code rc = auth_service_bootstrap_admin(b->svc, b->email, b->password, &e);
        if (rc == ERR_OK)
            break;
        if (rc == ERR_INVALID_ARGUMENT) {
            log_error(NULL, "bootstrap admin: rejected (%s); not retrying", e.msg);
            break;
        }
        if (attempt == 1 || attempt % 10 == 0)
            log_warn(NULL, "bootstrap admin: attempt %d failed (%s: %s); retrying", attempt,
                     err_str(rc), e.msg);
        for (int slept = 0; slept < wait_ms && !atomic_load(&b->stop); slept += 50) {
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
        wait_ms = wait_ms < 5000 ? wait_ms * 2 : 5000;
    }
    sodium_memzero(b->password, strlen(b->password));
    return NULL;
}

auth_bootstrap *auth_bootstrap_start(auth_service *svc, const char *email, const char *password)
{
    auth_bootstrap *b = xcalloc(1, sizeof *b);
    b->svc = svc;
    b->email = xstrdup(email);
    b->password = xstrdup(password);
    atomic_init(&b->stop, false);
    pthread_create(&b->thread, NULL, bootstrap_main, b);
    return b;
}

void auth_bootstrap_stop(auth_bootstrap *b)
{
    if (!b)
        return;
    atomic_store(&b->stop, true);
    pthread_join(b->thread, NULL);
    free(b->email);
    free(b->password);
    free(b);
}
