/* echo_service: the test service (test.v1.EchoService/Echo) served through rpc_server by the C
 * tests, the rpc_test_server binary (Python test, benchmark). */
#ifndef TEST_ECHO_SERVICE_H
#define TEST_ECHO_SERVICE_H

#include <stddef.h>

#include "common/rpc_client.h"
#include "common/rpc_server.h"
#include "test/v1/echo.pb-c.h"

#define ECHO_METHOD "/test.v1.EchoService/Echo"
#define ECHO_SERVICE "test.v1.EchoService"

/* rpc_server state: `self` is a client of this very server, for nested calls (may be NULL). */
typedef struct echo_state {
    rpc_client *self;
} echo_state;

extern const rpc_method echo_methods[];
extern const size_t echo_nmethods;

#endif
