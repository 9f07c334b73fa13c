/* db: a fixed-size libpq connection pool, transactions, prepared statements and migrations. */
#ifndef COMMON_DB_H
#define COMMON_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/log.h"

typedef struct db_pool db_pool;
typedef struct db_conn db_conn;
typedef struct db_result db_result;

typedef struct db_pool_opts {
    const char *conninfo;         /* libpq URL or key=value string */
    const char *schema;           /* search_path set on each connection, e.g. "users" */
    int size;                     /* fixed number of connections (opened lazily, capped) */
    int acquire_timeout_ms;       /* wait at most this long for a free connection */
    int statement_timeout_ms;     /* SET statement_timeout on each connection; 0 = none */
    int connect_timeout_s;        /* libpq connect_timeout; 0 = 5 */
    int slow_query_ms;            /* queries slower than this are logged (warn); 0 = off */
    const char *application_name; /* pg_stat_activity name; NULL = program name (a conninfo
                                     application_name wins) */
} db_pool_opts;

typedef struct db_pool_stats {
    int size, in_use, idle, waiting;
    uint64_t acquired, timeouts, reconnects;
    uint64_t wait_us_total;
} db_pool_stats;

/* A migration compiled into the binary (see cmake embed_migrations). */
typedef struct db_migration {
    const char *name; /* "0001_init" */
    const char *sql;
} db_migration;

/* Creates the pool and opens one connection to fail fast on a bad conninfo (ERR_UNAVAILABLE with
 * libpq's message, password masked). Thread-safe once created. */
db_pool *db_pool_new(const db_pool_opts *opts, err_info *e);
void db_pool_free(db_pool *p); /* NULL ok; all connections must have been released */
void db_pool_stats_get(db_pool *p, db_pool_stats *out);

/* Takes a connection, waiting at most acquire_timeout_ms (or until deadline_ms, a CLOCK_MONOTONIC
 * time in ms, when that comes sooner; 0 = none) → ERR_UNAVAILABLE "db pool exhausted". A broken
 * connection is replaced (reconnect) before it is handed out. */
err_code db_acquire(db_pool *p, int64_t deadline_ms, db_conn **out, err_info *e);
/* Returns the connection. An open transaction is rolled back; a broken connection is closed and
 * reopened later. */
void db_release(db_pool *p, db_conn *c);

/* Runs one parameterised statement (text params, NULL = SQL NULL), prepared once per connection and
 * cached by its SQL text. Errors: ERR_ALREADY_EXISTS (23505), ERR_FAILED_PRECONDITION (23503,
 * 23514), ERR_ABORTED (40001, 40P01), ERR_DEADLINE_EXCEEDED (57014), ERR_UNAVAILABLE (connection
 * lost, class 08, 57P01-03, 53300: the connection is marked broken), ERR_INTERNAL otherwise.
 * e->msg is "db: <server's primary message> (SQLSTATE xxxxx)" (no DETAIL, so no row values).
 * out may be NULL. Not thread-safe: one connection, one thread at a time. */
err_code db_exec(db_conn *c, const char *sql, int nparams, const char *const *params,
                 db_result **out, err_info *e);
/* Runs a multi-statement script without parameters (migrations, tests). */
err_code db_exec_script(db_conn *c, const char *sql, err_info *e);

/* BEGIN (ERR_INTERNAL if a transaction is already open). */
err_code db_begin(db_conn *c, err_info *e);
/* COMMIT. ERR_ABORTED when the transaction had failed (it is rolled back; PostgreSQL would answer
 * COMMIT with ROLLBACK silently); commit-time errors map as for db_exec. */
err_code db_commit(db_conn *c, err_info *e);
void db_rollback(db_conn *c);
/* SQLSTATE of the last failed statement ("" if none). */
const char *db_last_sqlstate(db_conn *c);
/* Constraint named by the last failed statement (23505 etc.; "" if none), e.g. to tell which
 * unique key was violated. */
const char *db_last_constraint(db_conn *c);
/* Log ids for slow-query lines of this connection's current user. */
void db_set_log_ctx(db_conn *c, const log_ctx *ctx);

int db_result_rows(const db_result *r);
int db_result_cols(const db_result *r);
/* Value as text; "" for NULL. Valid until db_result_free. */
const char *db_result_get(const db_result *r, int row, int col);
bool db_result_isnull(const db_result *r, int row, int col);
/* Rows affected by INSERT/UPDATE/DELETE. */
long db_result_affected(const db_result *r);
void db_result_free(db_result *r); /* NULL ok */

/* Applies migrations in order, each once, in its own transaction, under a PostgreSQL advisory lock
 * keyed by schema, recording applied names in <schema>.schema_migrations. Creates the schema if it
 * may. Safe to run from several processes at once. */
err_code db_migrate(db_pool *p, const char *schema, const db_migration *migs, size_t n,
                    err_info *e);

#endif
