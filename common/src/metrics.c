/* metrics: registry of families and series; atomic observations; Prometheus text; a tiny HTTP
 * server. */
#include "common/metrics.h"

#include <arpa/inet.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mem.h"

/* Doubles kept as their bit pattern in an atomic u64, so adds are a CAS loop and reads are plain.
 */
typedef _Atomic uint64_t atomic_f64;

static double f64_load(atomic_f64 *a)
{
    uint64_t b = atomic_load_explicit(a, memory_order_relaxed);
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static void f64_store(atomic_f64 *a, double v)
{
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    atomic_store_explicit(a, b, memory_order_relaxed);
}

static void f64_add(atomic_f64 *a, double v)
{
    uint64_t old = atomic_load_explicit(a, memory_order_relaxed), nb;
    do {
        double d;
        memcpy(&d, &old, sizeof d);
        d += v;
        memcpy(&nb, &d, sizeof nb);
    } while (!atomic_compare_exchange_weak_explicit(a, &old, nb, memory_order_relaxed,
                                                    memory_order_relaxed));
}

struct metrics_series {
    metrics_series *next;
    metrics_family *fam;
    char *labels[METRICS_MAX_LABELS];
    atomic_f64 value; /* counter / gauge; histogram sum */
    _Atomic uint64_t count;
    _Atomic uint64_t *buckets; /* histogram: one per bound (cumulative at render time) */
};

struct metrics_family {
    metrics_family *next;
    metrics_registry *reg;
    metrics_kind kind;
    char *name, *help;
    size_t nlabels;
    char *label_names[METRICS_MAX_LABELS];
    double *bounds;
    size_t nbounds;
    pthread_rwlock_t lock;
    metrics_series *_Atomic series; /* prepend-only list */
};

typedef struct metrics_collector {
    struct metrics_collector *next;
    void (*fn)(void *);
    void *arg;
} metrics_collector;

struct metrics_registry {
    pthread_mutex_t lock;
    metrics_family *families; /* in declaration order */
    metrics_collector *collectors;
};

static const double default_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1,     2.5,  5,     10};

metrics_registry *metrics_registry_new(void)
{
    metrics_registry *r = xcalloc(1, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    return r;
}

void metrics_registry_free(metrics_registry *r)
{
    if (!r)
        return;
    metrics_family *f = r->families;
    while (f) {
        metrics_family *nf = f->next;
        metrics_series *s = atomic_load(&f->series);
        while (s) {
            metrics_series *ns = s->next;
            for (size_t i = 0; i < f->nlabels; i++)
                free(s->labels[i]);
            free((void *)s->buckets);
            free(s);
            s = ns;
        }
        for (size_t i = 0; i < f->nlabels; i++)
            free(f->label_names[i]);
        free(f->bounds);
        free(f->name);
        free(f->help);
        pthread_rwlock_destroy(&f->lock);
        free(f);
        f = nf;
    }
    metrics_collector *c = r->collectors;
    while (c) {
        metrics_collector *n = c->next;
        free(c);
        c = n;
    }
    pthread_mutex_destroy(&r->lock);
    free(r);
}

metrics_family *metrics_family_new(metrics_registry *r, metrics_kind kind, const char *name,
                                   const char *help, const char *const *label_names,
                                   const double *buckets, size_t nbuckets)
{
    pthread_mutex_lock(&r->lock);
    metrics_family **tail = &r->families;
    for (metrics_family *f = r->families; f; f = f->next) {
        if (strcmp(f->name, name) == 0) {
            pthread_mutex_unlock(&r->lock);
            return f;
        }
        tail = &f->next;
    }
    metrics_family *f = xcalloc(1, sizeof *f);
    f->reg = r;
    f->kind = kind;
    f->name = xstrdup(name);
    f->help = xstrdup(help ? help : "");
    for (size_t i = 0; label_names && label_names[i] && i < METRICS_MAX_LABELS; i++)
        f->label_names[f->nlabels++] = xstrdup(label_names[i]);
    if (kind == METRICS_HISTOGRAM) {
        if (!buckets) {
            buckets = default_buckets;
            nbuckets = sizeof default_buckets / sizeof default_buckets[0];
        }
        f->bounds = xmalloc(nbuckets * sizeof *f->bounds);
        memcpy(f->bounds, buckets, nbuckets * sizeof *f->bounds);
        f->nbounds = nbuckets;
    }
    pthread_rwlock_init(&f->lock, NULL);
    *tail = f;
    pthread_mutex_unlock(&r->lock);
    return f;
}

static bool series_match(const metrics_family *f, const metrics_series *s,
                         const char *const *values)
{
    for (size_t i = 0; i < f->nlabels; i++) {
        const char *v = values && values[i] ? values[i] : "";
        if (strcmp(s->labels[i], v) != 0)
            return false;
    }
    return true;
}

metrics_series *metrics_series_get(metrics_family *f, const char *const *label_values)
{
    /* Lock-free read of a prepend-only list; the write lock only serialises insertions. */
    for (metrics_series *s = atomic_load(&f->series); s; s = s->next)
        if (series_match(f, s, label_values))
            return s;
    pthread_rwlock_wrlock(&f->lock);
    for (metrics_series *s = atomic_load(&f->series); s; s = s->next) {
        if (series_match(f, s, label_values)) {
            pthread_rwlock_unlock(&f->lock);
            return s;
        }
    }
    metrics_series *s = xcalloc(1, sizeof *s);
    s->fam = f;
    for (size_t i = 0; i < f->nlabels; i++)
        s->labels[i] = xstrdup(label_values && label_values[i] ? label_values[i] : "");
    if (f->kind == METRICS_HISTOGRAM)
        s->buckets = xcalloc(f->nbounds, sizeof *s->buckets);
    s->next = atomic_load(&f->series);
    atomic_store(&f->series, s);
    pthread_rwlock_unlock(&f->lock);
    return s;
}

void metrics_counter_add(metrics_series *s, double v)
{
    if (v > 0)
        f64_add(&s->value, v);
}
void metrics_gauge_set(metrics_series *s, double v)
{
    f64_store(&s->value, v);
}
void metrics_gauge_add(metrics_series *s, double v)
{
    f64_add(&s->value, v);
}

void metrics_histogram_observe(metrics_series *s, double v)
{
    const metrics_family *f = s->fam;
    if (f->kind != METRICS_HISTOGRAM) {
        f64_store(&s->value, v);
        return;
    }
    for (size_t i = 0; i < f->nbounds; i++) {
        if (v <= f->bounds[i]) {
            atomic_fetch_add_explicit(&s->buckets[i], 1, memory_order_relaxed);
            break;
        }
    }
    f64_add(&s->value, v);
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
}

void metrics_inc(metrics_family *f, const char *const *label_values)
{
    metrics_counter_add(metrics_series_get(f, label_values), 1);
}

void metrics_observe(metrics_family *f, const char *const *label_values, double v)
{
    metrics_series *s = metrics_series_get(f, label_values);
    metrics_histogram_observe(s, v);
}

void metrics_on_collect(metrics_registry *r, void (*fn)(void *), void *arg)
{
    metrics_collector *c = xcalloc(1, sizeof *c);
    c->fn = fn;
    c->arg = arg;
    pthread_mutex_lock(&r->lock);
    c->next = r->collectors;
    r->collectors = c;
    pthread_mutex_unlock(&r->lock);
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof tmp)
        n = sizeof tmp - 1;
    sb_put(b, tmp, (size_t)n);
}

static void sb_label_value(sbuf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            sb_put(b, "\\", 1), sb_put(b, v, 1);
        else if (*v == '\n')
            sb_put(b, "\\n", 2);
        else
            sb_put(b, v, 1);
    }
}

static void sb_double(sbuf *b, double v)
{
    if (isnan(v))
        sb_put(b, "NaN", 3);
    else if (isinf(v))
        sb_put(b, v > 0 ? "+Inf" : "-Inf", 4);
    else if (v == (double)(int64_t)v && fabs(v) < 1e15)
        sb_printf(b, "%lld", (long long)v);
    else
        sb_printf(b, "%.9g", v);
}

/* Writes {a="x",b="y"[,le="..."]} (nothing when there are no labels and no le). */
static void sb_labels(sbuf *b, const metrics_family *f, const metrics_series *s, const char *le)
{
    if (f->nlabels == 0 && !le)
        return;
    sb_put(b, "{", 1);
    for (size_t i = 0; i < f->nlabels; i++) {
        sb_printf(b, "%s%s=\"", i ? "," : "", f->label_names[i]);
        sb_label_value(b, s->labels[i]);
        sb_put(b, "\"", 1);
    }
    if (le)
        sb_printf(b, "%sle=\"%s\"", f->nlabels ? "," : "", le);
    sb_put(b, "}", 1);
}

char *metrics_render(metrics_registry *r, size_t *len)
{
    sbuf b = {0};
    sb_put(&b, "", 0);
    pthread_mutex_lock(&r->lock);
    metrics_collector *cs = r->collectors;
    pthread_mutex_unlock(&r->lock);
    for (metrics_collector *c = cs; c; c = c->next)
        c->fn(c->arg);
    pthread_mutex_lock(&r->lock);
    for (metrics_family *f = r->families; f; f = f->next) {
        static const char *types[] = {"counter", "gauge", "histogram"};
        sb_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, types[f->kind]);
        for (metrics_series *s = atomic_load(&f->series); s; s = s->next) {
            if (f->kind != METRICS_HISTOGRAM) {
                sb_put(&b, f->name, strlen(f->name));
                sb_labels(&b, f, s, NULL);
                sb_put(&b, " ", 1);
                sb_double(&b, f64_load(&s->value));
                sb_put(&b, "\n", 1);
                continue;
            }
            uint64_t cum = 0;
            for (size_t i = 0; i < f->nbounds; i++) {
                char le[32];
                snprintf(le, sizeof le, "%g", f->bounds[i]);
                cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
                sb_printf(&b, "%s_bucket", f->name);
                sb_labels(&b, f, s, le);
                sb_printf(&b, " %llu\n", (unsigned long long)cum);
            }
            uint64_t count = atomic_load_explicit(&s->count, memory_order_relaxed);
            /* +Inf equals count; read count after the buckets so +Inf >= every bucket. */
            if (count < cum)
                count = cum;
            sb_printf(&b, "%s_bucket", f->name);
            sb_labels(&b, f, s, "+Inf");
            sb_printf(&b, " %llu\n%s_sum", (unsigned long long)count, f->name);
            sb_labels(&b, f, s, NULL);
            sb_put(&b, " ", 1);
            sb_double(&b, f64_load(&s->value));
            sb_printf(&b, "\n%s_count", f->name);
            sb_labels(&b, f, s, NULL);
            sb_printf(&b, " %llu\n", (unsigned long long)count);
        }
    }
    pthread_mutex_unlock(&r->lock);
    if (len)
        *len = b.len;
    return b.p;
}

struct metrics_http {
    struct MHD_Daemon *d;
    metrics_registry *reg;
};

static enum MHD_Result metrics_http_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                            const char *method, const char *version,
                                            const char *upload_data, size_t *upload_data_size,
                                            void **req_cls)
{
    metrics_http *h = cls;
    struct MHD_Response *resp;
    unsigned status = MHD_HTTP_OK;
    if (strcmp(method, "GET") != 0) {
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        MHD_add_response_header(resp, "Allow", "GET");
    } else if (strcmp(url, "/metrics") == 0) {
        size_t len;
        char *text = metrics_render(h->reg, &len);
        resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
        MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    } else if (strcmp(url, "/health") == 0) {
        resp = MHD_create_response_from_buffer(15, (void *)"{\"status\":\"ok\"}",
                                               MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(resp, "Content-Type", "application/json");
    } else {
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        status = MHD_HTTP_NOT_FOUND;
    }
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

metrics_http *metrics_http_start(metrics_registry *r, const char *addr, char *errbuf, size_t errlen)
{
    char host[64] = "0.0.0.0";
    long port = 0;
    const char *colon = strrchr(addr ? addr : "", ':');
    if (colon) {
        size_t hl = (size_t)(colon - addr);
        if (hl > 0 && hl < sizeof host) {
            memcpy(host, addr, hl);
            host[hl] = '\0';
        }
        char *end;
        port = strtol(colon + 1, &end, 10);
        if (*end || port < 0 || port > 65535) {
            snprintf(errbuf, errlen, "metrics address '%s': bad port", addr);
            return NULL;
        }
    }
    if (port == 0)
        return NULL;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        snprintf(errbuf, errlen, "metrics address '%s': bad IPv4 host", addr);
        return NULL;
    }
    metrics_http *h = xcalloc(1, sizeof *h);
    h->reg = r;
    h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, (uint16_t)port, NULL,
                            NULL, metrics_http_handler, h, MHD_OPTION_SOCK_ADDR, &sa,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!h->d) {
        snprintf(errbuf, errlen, "metrics: cannot listen on %s (port taken?)", addr);
        free(h);
        return NULL;
    }
    return h;
}

void metrics_http_stop(metrics_http *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->d);
    free(h);
}
