/* auth_bench_prep: registers (or logs in) a benchmark user through auth-service and writes the
 * binary requests rpc_load replays: login.req (LoginRequest) and validate.req (ValidateTokenRequest
 * holding a fresh access token). Usage: auth_bench_prep <auth host:port> <email> <password> <dir>
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/v1/auth.pb-c.h"
#include "common/mem.h"
#include "common/rpc_client.h"

static int write_msg(const char *dir, const char *name, const ProtobufCMessage *m)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = xmalloc(n ? n : 1);
    protobuf_c_message_pack(m, buf);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, n, f) != n) {
        fprintf(stderr, "cannot write %s\n", path);
        free(buf);
        return 1;
    }
    fclose(f);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: auth_bench_prep <auth host:port> <email> <password> <dir>\n");
        return 2;
    }
    err_info e;
    err_clear(&e);
    rpc_client_opts o = {.target = argv[1], .name = "auth", .default_timeout_ms = 10000};
    rpc_client *c = rpc_client_new(&o, &e);
    if (!c)
        return 1;
    arena *a = arena_new(0);
    const char *access = NULL;
    for (int attempt = 0; attempt < 100 && !access; attempt++) {
        Auth__V1__RegisterRequest r = AUTH__V1__REGISTER_REQUEST__INIT;
        r.email = argv[2];
        r.password = argv[3];
        r.display_name = "Bench";
        ProtobufCMessage *resp = NULL;
        err_clear(&e);
        err_code rc = rpc_client_call(c, "/auth.v1.AuthService/Register", &r.base,
                                      &auth__v1__register_response__descriptor, NULL, a, &resp, &e);
        if (rc == ERR_OK) {
            access = ((Auth__V1__RegisterResponse *)resp)->access_token;
            break;
        }
        if (rc == ERR_ALREADY_EXISTS) {
            Auth__V1__LoginRequest l = AUTH__V1__LOGIN_REQUEST__INIT;
            l.email = argv[2];
            l.password = argv[3];
            rc = rpc_client_call(c, "/auth.v1.AuthService/Login", &l.base,
                                 &auth__v1__token_pair__descriptor, NULL, a, &resp, &e);
            if (rc == ERR_OK)
                access = ((Auth__V1__TokenPair *)resp)->access_token;
        }
        if (!access) {
            fprintf(stderr, "prep: %s: %s (retrying)\n", err_str(rc), e.msg);
            struct timespec ts = {0, 300 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    if (!access)
        return 1;
    Auth__V1__LoginRequest l = AUTH__V1__LOGIN_REQUEST__INIT;
    l.email = argv[2];
    l.password = argv[3];
    Auth__V1__ValidateTokenRequest v = AUTH__V1__VALIDATE_TOKEN_REQUEST__INIT;
    v.access_token = (char *)access;
    int rc = write_msg(argv[4], "login.req", &l.base) | write_msg(argv[4], "validate.req", &v.base);
    arena_free(a);
    rpc_client_free(c);
    return rc;
}
