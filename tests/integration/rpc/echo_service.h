/* echo_service: the test service (test.v1.EchoService/Echo) served through rpc_server by the C
 * tests, the rpc_test_server binary (Python test, benchmark). */
#ifndef TEST_ECHO_SERVICE_H
#define TEST_ECHO_SERVICE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/rpc_client.h"
#include "common/rpc_server.h"
#include "test/v1/echo.pb-c.h"

#define ECHO_METHOD "/test.v1.EchoService/Echo"
/* The same handler registered nonblocking (it runs on the server's polling thread): call it in
 * the asynchronous modes below, or with sleep_ms 0. */
#define ECHO_INLINE_METHOD "/test.v1.EchoService/EchoInline"
#define ECHO_SERVICE "test.v1.EchoService"

/* Asynchronous answers (RPC_PENDING, rpc_reply, rpc_continue), chosen by the request's text
 * prefix; the answer is then what the synchronous echo would give (fail_code, violations, -1 and
 * -2 included; no nested call), sleep_ms is the delay before it (on the replier thread, not a
 * server worker), and the response's text is the whole request text:
 *   "async-reply:..."     the handler returns RPC_PENDING; the replier answers with rpc_reply
 *                         (e == NULL on success); fail_code 1000 makes it pass RPC_PENDING.
 *   "async-continue:..."  the replier calls rpc_continue; the continuation (on a server worker)
 *                         returns the answer.
 *   "async-continue-pending:..."  the same, but the continuation returns RPC_PENDING again and
 *                         the replier answers with rpc_reply sleep_ms later.
 * Without a replier (echo_state.replier NULL) these answer FAILED_PRECONDITION. */
#define ECHO_ASYNC_REPLY "async-reply:"
#define ECHO_ASYNC_CONTINUE "async-continue:"
#define ECHO_ASYNC_CONTINUE_PENDING "async-continue-pending:"

/* "watch-cancel:..." (synchronous): rpc_watch_cancel, then up to sleep_ms polling
 * rpc_ctx_cancelled every 5 ms; a handler that saw its caller leave counts in
 * echo_cancel_seen(), else it answers the plain echo. */
#define ECHO_WATCH_CANCEL "watch-cancel:"
int echo_cancel_seen(void);

/* One thread that answers pending calls when they are due. */
typedef struct echo_replier echo_replier;

/* What the replier saw (for the tests). */
typedef struct echo_async_seen {
    int pending;            /* RPC_PENDING returns so far (handlers and continuations) */
    int replies;            /* rpc_reply calls made */
    int continues;          /* rpc_continue calls made */
    int continuations;      /* continuations run */
    bool cont_on_replier;   /* some continuation ran on the replier thread (must not) */
    pthread_t handler;      /* the thread the last pending handler ran on */
    pthread_t continuation; /* the thread the last continuation ran on */
    pthread_t replier;      /* the replier thread */
} echo_async_seen;

echo_replier *echo_replier_new(void);
/* Answers what is still queued (each when due), then stops the thread. Free the server first:
 * its shutdown waits for the pending calls, which need the replier. NULL ok. */
void echo_replier_free(echo_replier *r);
void echo_replier_seen(echo_replier *r, echo_async_seen *out);
/* Waits until `pending` reached n; false after timeout_ms. */
bool echo_replier_wait_pending(echo_replier *r, int n, int timeout_ms);

/* rpc_server state: `self` is a client of this very server, for nested calls (may be NULL);
 * `replier` answers the asynchronous modes (may be NULL). */
typedef struct echo_state {
    rpc_client *self;
    echo_replier *replier;
} echo_state;

extern const rpc_method echo_methods[];
extern const size_t echo_nmethods;

#endif
