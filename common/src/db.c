/* db: owns every libpq call of the project: a fixed-size connection pool that heals after a
 * PostgreSQL restart, per-connection prepared statements, transactions, SQLSTATE mapping,
 * slow-query logs and the advisory-locked migrations runner. */
#include "common/db.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/config.h"
#include "common/mem.h"

/* Beyond this many distinct SQL texts a connection stops preparing (unprepared execution), so a
 * caller that builds SQL dynamically cannot grow the server-side statement cache without bound. */
#define DB_STMT_MAX 256

typedef struct db_stmt {
    uint64_t hash;
    char *sql;
    char name[16];
} db_stmt;

struct db_conn {
    db_pool *pool;
    PGconn *pg;
    bool broken;         /* found dead: closed on release, reopened on next acquire */
    bool ever_connected; /* reopening it counts as a reconnect */
    db_stmt *stmts;
    size_t nstmts, capstmts;
    unsigned next_stmt;
    char sqlstate[6];
    char constraint[64];
    const log_ctx *lctx;
};

struct db_result {
    PGresult *res;
};

struct db_pool {
    char *conninfo, *schema, *appname;
    int size, acquire_timeout_ms, statement_timeout_ms, connect_timeout_ms, slow_query_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled when a slot is released */
    db_conn *conns;    /* size slots; a slot's PGconn is opened on first use */
    int *free_slots;   /* stack of free slot indexes; the most recently released on top */
    int nfree, in_use, waiting;
    uint64_t acquired, timeouts, reconnects, wait_us_total;
};

static int64_t db_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* libpq messages end with a newline and may span lines ("\n\tIs the server running..."): one line,
 * and redacted, because a conninfo echoed back by a server or library must never reach a log. */
static void db_clean_msg(const char *in, char *out, size_t len)
{
    char tmp[ERR_MSG_LEN];
    size_t o = 0;
    bool space = false;
    for (const char *p = in ? in : ""; *p && o + 1 < sizeof tmp; p++) {
        if (*p == '\n' || *p == '\t' || *p == '\r' || *p == ' ') {
            space = o > 0;
            continue;
        }
        if (space && o + 2 < sizeof tmp)
            tmp[o++] = ' ';
        space = false;
        tmp[o++] = *p;
    }
    tmp[o] = '\0';
    config_redact(tmp, out, len);
}

/* ---- error mapping ---- */

static err_code db_map_sqlstate(const char *st)
{
    static const struct {
        const char *state;
        err_code code;
    } map[] = {
        {"23505", ERR_ALREADY_EXISTS},
        {"23503", ERR_FAILED_PRECONDITION},
        {"23514", ERR_FAILED_PRECONDITION},
        {"40001", ERR_ABORTED},
        {"40P01", ERR_ABORTED},
        {"57014", ERR_DEADLINE_EXCEEDED},
        {"57P01", ERR_UNAVAILABLE},
        {"57P02", ERR_UNAVAILABLE},
        {"57P03", ERR_UNAVAILABLE},
        {"53300", ERR_UNAVAILABLE},
    };
    if (!st || !*st)
        return ERR_INTERNAL;
    if (strncmp(st, "08", 2) == 0) /* connection exception class */
        return ERR_UNAVAILABLE;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(st, map[i].state) == 0)
            return map[i].code;
    return ERR_INTERNAL;
}

/* Turns a failed result (or NULL) into an err_code, records SQLSTATE and constraint, marks the
 * connection broken when it was lost, and clears r. */
static err_code db_fail(db_conn *c, PGresult *r, err_info *e)
{
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *cons = r ? PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME) : NULL;
    snprintf(c->sqlstate, sizeof c->sqlstate, "%s", st ? st : "");
    snprintf(c->constraint, sizeof c->constraint, "%s", cons ? cons : "");
    err_code code = db_map_sqlstate(st);
    bool lost = !r || PQstatus(c->pg) != CONNECTION_OK || code == ERR_UNAVAILABLE;
    if (lost) {
        c->broken = true;
        code = ERR_UNAVAILABLE;
    }
    const char *prim = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char msg[ERR_MSG_LEN];
    db_clean_msg(prim ? prim : PQerrorMessage(c->pg), msg, sizeof msg);
    if (!*msg)
        snprintf(msg, sizeof msg, "%s", lost ? "connection lost" : "statement failed");
    if (st && *st)
        err_set(e, code, "db: %s (SQLSTATE %s)", msg, st);
    else
        err_set(e, code, "db: %s", msg);
    PQclear(r);
    return code;
}

/* ---- connections ---- */

static void db_stmts_clear(db_conn *c)
{
    for (size_t i = 0; i < c->nstmts; i++)
        free(c->stmts[i].sql);
    c->nstmts = 0;
    c->next_stmt = 0;
}

static void db_conn_close(db_conn *c)
{
    if (c->pg)
        PQfinish(c->pg);
    c->pg = NULL;
    c->broken = false;
    db_stmts_clear(c);
}

/* Server notices ("relation already exists, skipping") would go to stderr as bare text: keep them
 * out of the JSON log unless debugging. */
static void db_notice(void *arg, const char *message)
{
    (void)arg;
    char msg[ERR_MSG_LEN];
    db_clean_msg(message, msg, sizeof msg);
    log_debug(NULL, "db notice: %s", msg);
}

/* Opens c's connection (closing any previous one), bounded by limit_us on the monotonic clock,
 * then sets search_path and statement_timeout. */
static err_code db_conn_open(db_conn *c, const char *schema, int stmt_timeout_ms, int64_t limit_us,
                             err_info *e)
{
    db_pool *p = c->pool;
    db_conn_close(c);
    char tmo[16];
    snprintf(tmo, sizeof tmo, "%d", (p->connect_timeout_ms + 999) / 1000);
    /* Keywords before dbname are defaults the conninfo (expanded from dbname) may override. */
    const char *keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *vals[] = {tmo, p->appname, p->conninfo, NULL};
    PGconn *pg = PQconnectStartParams(keys, vals, 1);
    if (!pg) {
        fprintf(stderr, "db: out of memory\n");
        abort();
    }
    /* Asynchronous connect so the wait is bounded in ms by our deadline (libpq's connect_timeout
     * has a 2 s floor and is not applied by PQconnectPoll). */
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    char why[ERR_MSG_LEN] = "";
    while (PQstatus(pg) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        int64_t left_us = limit_us - db_now_us();
        if (left_us <= 0) {
            snprintf(why, sizeof why, "timed out after %d ms", p->connect_timeout_ms);
            break;
        }
        struct pollfd pfd = {.fd = PQsocket(pg),
                             .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        int n = poll(&pfd, 1, (int)((left_us + 999) / 1000));
        if (n < 0 && errno != EINTR) {
            snprintf(why, sizeof why, "poll: %s", strerror(errno));
            break;
        }
        if (n > 0)
            st = PQconnectPoll(pg);
    }
    if (st != PGRES_POLLING_OK || PQstatus(pg) != CONNECTION_OK) {
        if (!*why)
            db_clean_msg(PQerrorMessage(pg), why, sizeof why);
        PQfinish(pg);
        return err_set(e, ERR_UNAVAILABLE, "db: cannot connect: %s", why);
    }
    PQsetNoticeProcessor(pg, db_notice, NULL);
    c->pg = pg;
    c->broken = false;

    char sql[512];
    size_t o = 0;
    if (schema && *schema) {
        char *q = PQescapeIdentifier(pg, schema, strlen(schema));
        if (!q) {
            db_conn_close(c);
            return err_set(e, ERR_INVALID_ARGUMENT, "db: bad schema name");
        }
        o = (size_t)snprintf(sql, sizeof sql, "SET search_path = %s; ", q);
        PQfreemem(q);
    }
    snprintf(sql + o, sizeof sql - o, "SET statement_timeout = %d", stmt_timeout_ms);
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        err_code rc = db_fail(c, r, e);
        err_prefix(e, "session setup: ");
        db_conn_close(c);
        return rc;
    }
    PQclear(r);
    c->ever_connected = true;
    return ERR_OK;
}

/* An idle connection has nothing to read: readable means the server sent a termination notice or
 * closed it (restart, pg_terminate_backend, idle timeout), so it must be replaced before use. */
static bool db_conn_healthy(db_conn *c)
{
    if (!c->pg || c->broken || PQstatus(c->pg) != CONNECTION_OK ||
        PQtransactionStatus(c->pg) != PQTRANS_IDLE)
        return false;
    struct pollfd pfd = {.fd = PQsocket(c->pg), .events = POLLIN};
    return poll(&pfd, 1, 0) == 0;
}

/* ---- pool ---- */

db_pool *db_pool_new(const db_pool_opts *opts, err_info *e)
{
    if (!opts || !opts->conninfo || opts->size < 1 || opts->acquire_timeout_ms < 0) {
        err_set(e, ERR_INVALID_ARGUMENT, "db: pool needs a conninfo and size >= 1");
        return NULL;
    }
    db_pool *p = xcalloc(1, sizeof *p);
    p->conninfo = xstrdup(opts->conninfo);
    p->schema = opts->schema ? xstrdup(opts->schema) : NULL;
    p->appname =
        xstrdup(opts->application_name && *opts->application_name ? opts->application_name
                                                                  : program_invocation_short_name);
    p->size = opts->size;
    p->acquire_timeout_ms = opts->acquire_timeout_ms;
    p->statement_timeout_ms = opts->statement_timeout_ms > 0 ? opts->statement_timeout_ms : 0;
    p->connect_timeout_ms = (opts->connect_timeout_s > 0 ? opts->connect_timeout_s : 5) * 1000;
    p->slow_query_ms = opts->slow_query_ms;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    p->conns = xcalloc((size_t)p->size, sizeof *p->conns);
    p->free_slots = xcalloc((size_t)p->size, sizeof *p->free_slots);
    for (int i = 0; i < p->size; i++) {
        p->conns[i].pool = p;
        p->free_slots[i] = p->size - 1 - i; /* slot 0 on top */
    }
    p->nfree = p->size;
    /* Fail fast on a wrong conninfo or an unreachable server; the connection stays in slot 0. */
    if (db_conn_open(&p->conns[0], p->schema, p->statement_timeout_ms,
                     db_now_us() + (int64_t)p->connect_timeout_ms * 1000, e) != ERR_OK) {
        db_pool_free(p);
        return NULL;
    }
    return p;
}

void db_pool_free(db_pool *p)
{
    if (!p)
        return;
    if (p->in_use > 0)
        log_warn(NULL, "db: pool freed with %d connection(s) still in use", p->in_use);
    for (int i = 0; i < p->size; i++) {
        db_conn_close(&p->conns[i]);
        free(p->conns[i].stmts);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->conns);
    free(p->free_slots);
    free(p->conninfo);
    free(p->schema);
    free(p->appname);
    free(p);
}

void db_pool_stats_get(db_pool *p, db_pool_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    out->size = p->size;
    out->in_use = p->in_use;
    out->waiting = p->waiting;
    for (int i = 0; i < p->nfree; i++)
        if (p->conns[p->free_slots[i]].pg)
            out->idle++;
    out->acquired = p->acquired;
    out->timeouts = p->timeouts;
    out->reconnects = p->reconnects;
    out->wait_us_total = p->wait_us_total;
    pthread_mutex_unlock(&p->mu);
}

static void db_slot_return(db_pool *p, db_conn *c)
{
    pthread_mutex_lock(&p->mu);
    p->free_slots[p->nfree++] = (int)(c - p->conns);
    p->in_use--;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

err_code db_acquire(db_pool *p, int64_t deadline_ms, db_conn **out, err_info *e)
{
    int64_t start = db_now_us();
    int64_t limit = start + (int64_t)p->acquire_timeout_ms * 1000;
    if (deadline_ms > 0 && deadline_ms * 1000 < limit)
        limit = deadline_ms * 1000;

    pthread_mutex_lock(&p->mu);
    while (p->nfree == 0) {
        int64_t now = db_now_us();
        if (now >= limit) {
            p->timeouts++;
            p->wait_us_total += (uint64_t)(now - start);
            pthread_mutex_unlock(&p->mu);
            /* A retry hint (RetryInfo, HTTP Retry-After) also tells rpc_client not to retry at
             * once: retrying into a saturated pool would multiply its load. */
            if (e)
                e->retry_after_s = 1;
            return err_set(e, ERR_UNAVAILABLE, "db pool exhausted (waited %" PRId64 " ms)",
                           (now - start) / 1000);
        }
        struct timespec ts = {.tv_sec = (time_t)(limit / 1000000),
                              .tv_nsec = (long)(limit % 1000000) * 1000};
        p->waiting++;
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        p->waiting--;
    }
    db_conn *c = &p->conns[p->free_slots[--p->nfree]];
    p->in_use++;
    p->acquired++;
    p->wait_us_total += (uint64_t)(db_now_us() - start);
    pthread_mutex_unlock(&p->mu);

    if (!db_conn_healthy(c)) {
        bool reconnect = c->ever_connected;
        /* The connect gets the caller's remaining wait, but at least a second: a slot freed at the
         * last moment should not fail a connect that takes milliseconds. */
        int64_t now = db_now_us();
        int64_t climit = now + (int64_t)p->connect_timeout_ms * 1000;
        int64_t floor = (limit > now + 1000000 ? limit : now + 1000000);
        if (climit > floor)
            climit = floor;
        err_code rc = db_conn_open(c, p->schema, p->statement_timeout_ms, climit, e);
        if (reconnect) {
            pthread_mutex_lock(&p->mu);
            p->reconnects++;
            pthread_mutex_unlock(&p->mu);
            if (rc == ERR_OK)
                log_info(NULL, "db: connection reopened");
        }
        if (rc != ERR_OK) {
            db_slot_return(p, c);
            return rc;
        }
    }
    c->sqlstate[0] = '\0';
    c->constraint[0] = '\0';
    *out = c;
    return ERR_OK;
}

void db_release(db_pool *p, db_conn *c)
{
    if (!c)
        return;
    if (c->pg && !c->broken) {
        PGTransactionStatusType ts = PQtransactionStatus(c->pg);
        if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
            PGresult *r = PQexec(c->pg, "ROLLBACK");
            if (PQresultStatus(r) != PGRES_COMMAND_OK)
                c->broken = true;
            PQclear(r);
        } else if (ts != PQTRANS_IDLE) {
            c->broken = true;
        }
    }
    if (c->broken) /* close now: no dead socket held; the slot reconnects on its next use */
        db_conn_close(c);
    c->lctx = NULL;
    db_slot_return(p, c);
}

/* ---- statements ---- */

static uint64_t db_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static void db_log_slow(db_conn *c, const char *sql, int64_t us)
{
    int slow = c->pool->slow_query_ms;
    if (slow <= 0 || us <= (int64_t)slow * 1000)
        return;
    /* The statement's first 80 characters, never its parameters. */
    char head[81];
    size_t o = 0;
    for (const char *s = sql; *s && o < 80; s++) {
        char ch = (*s == '\n' || *s == '\t' || *s == '\r') ? ' ' : *s;
        if (ch == ' ' && (o == 0 || head[o - 1] == ' '))
            continue;
        head[o++] = ch;
    }
    head[o] = '\0';
    char js[200], kv[300];
    snprintf(kv, sizeof kv, "\"duration_ms\":%.1f,\"statement\":%s", (double)us / 1000.0,
             log_json_str(js, sizeof js, head));
    log_warn_kv(c->lctx, kv, "slow query");
}

static const char *db_prepared_name(db_conn *c, const char *sql, int nparams, err_info *e,
                                    err_code *rc)
{
    uint64_t h = db_hash(sql);
    for (size_t i = 0; i < c->nstmts; i++)
        if (c->stmts[i].hash == h && strcmp(c->stmts[i].sql, sql) == 0)
            return c->stmts[i].name;
    if (c->nstmts >= DB_STMT_MAX)
        return NULL;
    char name[16];
    snprintf(name, sizeof name, "s%u", ++c->next_stmt);
    PGresult *r = PQprepare(c->pg, name, sql, nparams, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        *rc = db_fail(c, r, e);
        return NULL;
    }
    PQclear(r);
    if (c->nstmts == c->capstmts) {
        c->capstmts = c->capstmts ? c->capstmts * 2 : 16;
        c->stmts = xrealloc(c->stmts, c->capstmts * sizeof *c->stmts);
    }
    db_stmt *s = &c->stmts[c->nstmts++];
    s->hash = h;
    s->sql = xstrdup(sql);
    memcpy(s->name, name, sizeof name);
    return s->name;
}

err_code db_exec(db_conn *c, const char *sql, int nparams, const char *const *params,
                 db_result **out, err_info *e)
{
    if (!c || !c->pg || c->broken)
        return err_set(e, ERR_UNAVAILABLE, "db: connection lost");
    c->sqlstate[0] = '\0';
    c->constraint[0] = '\0';
    int64_t t0 = db_now_us();
    err_code rc = ERR_OK;
    const char *name = db_prepared_name(c, sql, nparams, e, &rc);
    if (rc != ERR_OK) {
        db_log_slow(c, sql, db_now_us() - t0);
        return rc;
    }
    PGresult *r = name ? PQexecPrepared(c->pg, name, nparams, params, NULL, NULL, 0)
                       : PQexecParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0);
    db_log_slow(c, sql, db_now_us() - t0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        return db_fail(c, r, e);
    if (out) {
        db_result *res = xmalloc(sizeof *res);
        res->res = r;
        *out = res;
    } else {
        PQclear(r);
    }
    return ERR_OK;
}

err_code db_exec_script(db_conn *c, const char *sql, err_info *e)
{
    if (!c || !c->pg || c->broken)
        return err_set(e, ERR_UNAVAILABLE, "db: connection lost");
    c->sqlstate[0] = '\0';
    c->constraint[0] = '\0';
    int64_t t0 = db_now_us();
    PGresult *r = PQexec(c->pg, sql);
    db_log_slow(c, sql, db_now_us() - t0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY)
        return db_fail(c, r, e);
    PQclear(r);
    return ERR_OK;
}

static err_code db_simple(db_conn *c, const char *sql, err_info *e)
{
    if (!c || !c->pg || c->broken)
        return err_set(e, ERR_UNAVAILABLE, "db: connection lost");
    PGresult *r = PQexec(c->pg, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return db_fail(c, r, e);
    PQclear(r);
    return ERR_OK;
}

err_code db_begin(db_conn *c, err_info *e)
{
    if (c && c->pg && !c->broken && PQtransactionStatus(c->pg) != PQTRANS_IDLE)
        return err_set(e, ERR_INTERNAL, "db: BEGIN inside an open transaction");
    return db_simple(c, "BEGIN", e);
}

err_code db_commit(db_conn *c, err_info *e)
{
    if (!c || !c->pg || c->broken)
        return err_set(e, ERR_UNAVAILABLE, "db: connection lost");
    /* COMMIT of a failed transaction "succeeds" as ROLLBACK: report it instead of hiding it. */
    if (PQtransactionStatus(c->pg) == PQTRANS_INERROR) {
        db_rollback(c);
        return err_set(e, ERR_ABORTED, "db: transaction failed earlier and was rolled back");
    }
    PGresult *r = PQexec(c->pg, "COMMIT");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return db_fail(c, r, e);
    bool rolled_back = strcmp(PQcmdStatus(r), "ROLLBACK") == 0;
    PQclear(r);
    if (rolled_back)
        return err_set(e, ERR_ABORTED, "db: transaction was rolled back");
    return ERR_OK;
}

void db_rollback(db_conn *c)
{
    if (!c || !c->pg || c->broken || PQtransactionStatus(c->pg) == PQTRANS_IDLE)
        return;
    PGresult *r = PQexec(c->pg, "ROLLBACK");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        c->broken = true;
    PQclear(r);
}

const char *db_last_sqlstate(db_conn *c)
{
    return c ? c->sqlstate : "";
}
const char *db_last_constraint(db_conn *c)
{
    return c ? c->constraint : "";
}
void db_set_log_ctx(db_conn *c, const log_ctx *ctx)
{
    if (c)
        c->lctx = ctx;
}

/* ---- results ---- */

int db_result_rows(const db_result *r)
{
    return r ? PQntuples(r->res) : 0;
}
int db_result_cols(const db_result *r)
{
    return r ? PQnfields(r->res) : 0;
}
const char *db_result_get(const db_result *r, int row, int col)
{
    if (!r || row < 0 || col < 0 || row >= PQntuples(r->res) || col >= PQnfields(r->res))
        return "";
    return PQgetvalue(r->res, row, col);
}
bool db_result_isnull(const db_result *r, int row, int col)
{
    if (!r || row < 0 || col < 0 || row >= PQntuples(r->res) || col >= PQnfields(r->res))
        return true;
    return PQgetisnull(r->res, row, col) != 0;
}
long db_result_affected(const db_result *r)
{
    const char *s = r ? PQcmdTuples(r->res) : "";
    return *s ? strtol(s, NULL, 10) : 0;
}
void db_result_free(db_result *r)
{
    if (!r)
        return;
    PQclear(r->res);
    free(r);
}

/* ---- migrations ---- */

err_code db_migrate(db_pool *p, const char *schema, const db_migration *migs, size_t n, err_info *e)
{
    if (!schema || !*schema)
        return err_set(e, ERR_INVALID_ARGUMENT, "db: migrate needs a schema");
    /* A dedicated connection: the session-level advisory lock lives and dies with it, and a long
     * migration neither holds a pool slot nor runs under the request statement_timeout. */
    db_conn mc = {.pool = p};
    err_code rc =
        db_conn_open(&mc, schema, 0, db_now_us() + (int64_t)p->connect_timeout_ms * 1000, e);
    if (rc != ERR_OK)
        return rc;
    const char *sp[] = {schema};
    char *q = PQescapeIdentifier(mc.pg, schema, strlen(schema));
    if (!q) {
        db_conn_close(&mc);
        return err_set(e, ERR_INVALID_ARGUMENT, "db: bad schema name");
    }
    char *sql = NULL;
    char **applied = NULL;
    int napplied = 0;
    db_result *res = NULL;
    bool locked = false;

    rc = db_exec(&mc, "SELECT pg_advisory_lock(hashtext($1))", 1, sp, NULL, e);
    if (rc != ERR_OK)
        goto out;
    locked = true;

    /* Create the schema only when missing: service roles may lack CREATE on the database. */
    rc = db_exec(&mc, "SELECT 1 FROM pg_namespace WHERE nspname = $1", 1, sp, &res, e);
    if (rc != ERR_OK)
        goto out;
    if (db_result_rows(res) == 0) {
        size_t len = strlen(q) + 64;
        sql = xmalloc(len);
        snprintf(sql, len, "CREATE SCHEMA IF NOT EXISTS %s", q);
        rc = db_exec_script(&mc, sql, e);
        free(sql);
        sql = NULL;
        if (rc != ERR_OK)
            goto out;
    }
    db_result_free(res);
    res = NULL;

    size_t len = strlen(q) + 160;
    sql = xmalloc(len);
    snprintf(sql, len,
             "CREATE TABLE IF NOT EXISTS %s.schema_migrations (name text PRIMARY KEY, "
             "applied_at timestamptz NOT NULL DEFAULT now())",
             q);
    rc = db_exec_script(&mc, sql, e);
    if (rc != ERR_OK)
        goto out;
    snprintf(sql, len, "SELECT name FROM %s.schema_migrations", q);
    rc = db_exec(&mc, sql, 0, NULL, &res, e);
    if (rc != ERR_OK)
        goto out;
    napplied = db_result_rows(res);
    applied = xcalloc((size_t)napplied + 1, sizeof *applied);
    for (int i = 0; i < napplied; i++)
        applied[i] = xstrdup(db_result_get(res, i, 0));
    db_result_free(res);
    res = NULL;
    snprintf(sql, len, "INSERT INTO %s.schema_migrations (name) VALUES ($1)", q);

    for (size_t m = 0; m < n; m++) {
        if (!migs[m].name)
            continue;
        bool done = false;
        for (int i = 0; i < napplied && !done; i++)
            done = strcmp(applied[i], migs[m].name) == 0;
        if (done)
            continue;
        int64_t t0 = db_now_us();
        const char *np[] = {migs[m].name};
        rc = db_begin(&mc, e);
        if (rc == ERR_OK)
            rc = db_exec_script(&mc, migs[m].sql, e);
        if (rc == ERR_OK)
            rc = db_exec(&mc, sql, 1, np, NULL, e);
        if (rc == ERR_OK)
            rc = db_commit(&mc, e);
        if (rc != ERR_OK) {
            db_rollback(&mc);
            char pre[128];
            snprintf(pre, sizeof pre, "migration %s: ", migs[m].name);
            err_prefix(e, pre);
            goto out;
        }
        char jn[160], js[160], kv[360];
        snprintf(kv, sizeof kv, "\"migration\":%s,\"schema\":%s,\"duration_ms\":%.1f",
                 log_json_str(jn, sizeof jn, migs[m].name), log_json_str(js, sizeof js, schema),
                 (double)(db_now_us() - t0) / 1000.0);
        log_info_kv(NULL, kv, "migration applied");
    }

out:
    if (locked && mc.pg && !mc.broken) {
        err_info ue;
        db_rollback(&mc);
        db_exec(&mc, "SELECT pg_advisory_unlock(hashtext($1))", 1, sp, NULL, &ue);
    }
    db_result_free(res);
    for (int i = 0; i < napplied; i++)
        free(applied[i]);
    free(applied);
    free(sql);
    PQfreemem(q);
    db_conn_close(&mc); /* closing also releases the lock, should the unlock have failed */
    free(mc.stmts);
    return rc;
}
