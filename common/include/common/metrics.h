/* metrics: counters, gauges and fixed-bucket histograms with labels, rendered as Prometheus text.
 */
#ifndef COMMON_METRICS_H
#define COMMON_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* A registry owns metric families; a family owns its label sets (series). Series are created on
 * first use and live as long as the registry: label values must come from small sets (route
 * templates, gRPC codes), never from user input. Observations are lock-free (atomics); creating a
 * new series takes the family's lock once. */
typedef struct metrics_registry metrics_registry;
typedef struct metrics_family metrics_family;
typedef struct metrics_series metrics_series;

typedef enum metrics_kind { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM } metrics_kind;

#define METRICS_MAX_LABELS 4

metrics_registry *metrics_registry_new(void);
void metrics_registry_free(metrics_registry *r); /* NULL ok */

/* Declares a family. label_names: NULL-terminated (at most METRICS_MAX_LABELS). buckets: upper
 * bounds in ascending order for histograms (NULL = default latency buckets in seconds). Returns the
 * existing family when the name is already declared. */
metrics_family *metrics_family_new(metrics_registry *r, metrics_kind kind, const char *name,
                                   const char *help, const char *const *label_names,
                                   const double *buckets, size_t nbuckets);

/* The series for these label values (same count as the family's names; NULL when none). */
metrics_series *metrics_series_get(metrics_family *f, const char *const *label_values);

void metrics_counter_add(metrics_series *s, double v);
void metrics_gauge_set(metrics_series *s, double v);
void metrics_gauge_add(metrics_series *s, double v);
void metrics_histogram_observe(metrics_series *s, double v);

/* Convenience: family lookup + series + op in one call (slower: hashes the labels). */
void metrics_inc(metrics_family *f, const char *const *label_values);
void metrics_observe(metrics_family *f, const char *const *label_values, double v);

/* A callback run before each rendering, to set gauges from other modules' stats (pool in use...).
 */
void metrics_on_collect(metrics_registry *r, void (*fn)(void *arg), void *arg);

/* Prometheus text exposition format 0.0.4; malloc'ed, caller frees. */
char *metrics_render(metrics_registry *r, size_t *len);

/* Serves GET /metrics (and /health) over HTTP on addr ("0.0.0.0:9092"; port 0 = none started).
 * Returns NULL and fills errbuf when the port cannot be bound. */
typedef struct metrics_http metrics_http;
metrics_http *metrics_http_start(metrics_registry *r, const char *addr, char *errbuf,
                                 size_t errlen);
void metrics_http_stop(metrics_http *h); /* NULL ok */

#endif
