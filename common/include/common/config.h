/* config: a typed table of options read once from the environment, validated, logged with secrets
 * masked. */
#ifndef COMMON_CONFIG_H
#define COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"

typedef enum config_type {
    CONFIG_STR,    /* char * (heap, owned by the struct; freed by config_free) */
    CONFIG_SECRET, /* like CONFIG_STR, printed as "***" */
    CONFIG_INT,    /* int, checked against [min, max] */
    CONFIG_BOOL,   /* bool: true/false/1/0/yes/no/on/off */
} config_type;

typedef struct config_opt {
    const char *env; /* variable name, e.g. "DB_POOL_SIZE" */
    config_type type;
    size_t offset;    /* offsetof(struct, field) */
    const char *def;  /* default as text; NULL = required (for strings: "" allowed) */
    long min, max;    /* CONFIG_INT bounds (ignored when min == max == 0) */
    const char *help; /* one line, for docs and --help */
} config_opt;

/* Reads every option of the table from the environment (or its default) into out.
 * Returns ERR_INVALID_ARGUMENT with e->msg naming the variable and the problem
 * ("DB_POOL_SIZE: must be an integer in [1, 1000], got 'x'"). On error out is left
 * partly filled; call config_free on it anyway. */
err_code config_load(const config_opt *table, size_t n, void *out, err_info *e);
/* Logs one JSON line "config" with every option's value (secrets as "***"). */
void config_log(const config_opt *table, size_t n, const void *cfg);
/* Frees the strings config_load allocated. */
void config_free(const config_opt *table, size_t n, void *cfg);
/* Writes "NAME=default  # help" lines (for --help). */
void config_print_help(const config_opt *table, size_t n);
/* Copies s into out (always NUL-terminated, truncated to len) with passwords replaced by "***":
 * a URL's userinfo password (scheme://user:***@host) and a conninfo `password=***` value. For
 * logging connection strings and error messages that may quote them. */
void config_redact(const char *s, char *out, size_t len);

#endif
