/* permission_rpc: the PermissionService method table: proto ↔ domain, request validation into
 * field violations, and the calls into permission_service. */
#ifndef PERMISSION_RPC_H
#define PERMISSION_RPC_H

#include <stddef.h>

#include "common/rpc_server.h"
#include "permission_service.h"

/* Limits on what a client may send (documented in docs/arch/permission.md). */
#define PERM_MAX_ROLE_PERMISSIONS 256
#define PERM_MAX_ROLE_PARENTS 32
#define PERM_MAX_DESCRIPTION 1024
#define PERM_MAX_BATCH 100
#define PERM_PAGE_DEFAULT 50
#define PERM_PAGE_MAX 1000

/* What handlers get as ctx->state (built by main.c's start). */
typedef struct perm_state {
    perm_service *svc;
    void *events;  /* perm_events *, owned by main.c */
    void *metrics; /* perm_metrics *, owned by main.c */
} perm_state;

extern const rpc_method permission_rpc_methods[];
extern const size_t permission_rpc_nmethods;

#endif
