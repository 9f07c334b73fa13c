/* pbjson: proto3 JSON mapping for any protobuf-c message, driven only by its descriptors; output is
 * written straight into a buffer (fast path for the gateway), input is parsed with jansson. */
#include "common/pbjson.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/fmt.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"

#define PBJSON_MAX_DEPTH 32  /* JSON nesting accepted on input (top-level object = 1) */
#define PBJSON_ENC_DEPTH 100 /* message nesting emitted; deeper (hostile input) becomes null */
#define TS_MIN_SECONDS (-62135596800LL) /* 0001-01-01T00:00:00Z */
#define TS_MAX_SECONDS 253402300799LL   /* 9999-12-31T23:59:59Z */
#define DUR_MAX_SECONDS 315576000000LL  /* ±10000 years, as protobuf */

/* ---------------------------------------------------------------------------------------------
 * Descriptor helpers
 * ------------------------------------------------------------------------------------------- */

typedef enum wkt {
    WKT_NONE,
    WKT_TIMESTAMP,
    WKT_DURATION,
    WKT_FIELDMASK,
    WKT_ANY,
    WKT_WRAPPER, /* google.protobuf.*Value: JSON is the wrapped scalar itself */
} wkt;

static wkt wkt_kind(const ProtobufCMessageDescriptor *d)
{
    if (strncmp(d->name, "google.protobuf.", 16) != 0)
        return WKT_NONE;
    const char *n = d->name + 16;
    if (strcmp(n, "Timestamp") == 0)
        return WKT_TIMESTAMP;
    if (strcmp(n, "Duration") == 0)
        return WKT_DURATION;
    if (strcmp(n, "FieldMask") == 0)
        return WKT_FIELDMASK;
    if (strcmp(n, "Any") == 0)
        return WKT_ANY;
    static const char *const wrappers[] = {"DoubleValue", "FloatValue",  "Int64Value",
                                           "UInt64Value", "Int32Value",  "UInt32Value",
                                           "BoolValue",   "StringValue", "BytesValue"};
    for (size_t i = 0; i < sizeof wrappers / sizeof wrappers[0]; i++)
        if (strcmp(n, wrappers[i]) == 0 && d->n_fields == 1)
            return WKT_WRAPPER;
    return WKT_NONE;
}

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return 8;
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    default: /* 32-bit integers and enums (protobuf-c forces enums to int size) */
        return 4;
    }
}

/* A proto2-style optional scalar with a has_ flag (proto3 plain fields have none). */
static bool has_flag(const ProtobufCFieldDescriptor *f)
{
    return f->label == PROTOBUF_C_LABEL_OPTIONAL && !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
           f->type != PROTOBUF_C_TYPE_MESSAGE && f->type != PROTOBUF_C_TYPE_STRING;
}

/* protoc's ToJsonName: "display_name" -> "displayName". */
static bool camel_eq(const char *proto_name, const char *key)
{
    bool up = false;
    for (const char *p = proto_name; *p; p++) {
        if (*p == '_') {
            up = true;
            continue;
        }
        char c = up ? (char)toupper((unsigned char)*p) : *p;
        up = false;
        if (*key++ != c)
            return false;
    }
    return *key == '\0';
}

static const ProtobufCFieldDescriptor *field_by_key(const ProtobufCMessageDescriptor *d,
                                                    const char *key)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, key);
    if (f)
        return f;
    for (unsigned i = 0; i < d->n_fields; i++)
        if (camel_eq(d->fields[i].name, key))
            return &d->fields[i];
    return NULL;
}

/* protoc names a map<> field's entry type <Parent>.<FieldInCamel>Entry with fields key=1,
 * value=2; protobuf-c keeps no map_entry option, so that naming rule is how we recognise maps. */
static bool is_map_field(const ProtobufCMessageDescriptor *parent,
                         const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return false;
    const ProtobufCMessageDescriptor *md = f->descriptor;
    if (md->n_fields != 2 || md->fields[0].id != 1 || md->fields[1].id != 2 ||
        strcmp(md->fields[0].name, "key") != 0 || strcmp(md->fields[1].name, "value") != 0)
        return false;
    char want[256];
    size_t n = 0, pl = strlen(parent->name);
    if (pl + strlen(f->name) + 8 > sizeof want)
        return false;
    memcpy(want, parent->name, pl);
    n = pl;
    want[n++] = '.';
    bool cap = true;
    for (const char *p = f->name; *p; p++) {
        if (*p == '_') {
            cap = true;
        } else {
            want[n++] = (cap && *p >= 'a' && *p <= 'z') ? (char)(*p - 'a' + 'A') : *p;
            cap = false;
        }
    }
    memcpy(want + n, "Entry", 6);
    return strcmp(want, md->name) == 0;
}

static ProtobufCMessage *new_msg(arena *a, const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = arena_alloc(a, d->sizeof_message);
    protobuf_c_message_init(d, m);
    return m;
}

/* ---------------------------------------------------------------------------------------------
 * Any registry: written at start-up only, read without locks afterwards.
 * ------------------------------------------------------------------------------------------- */

#define ANY_MAX 64
static const ProtobufCMessageDescriptor *any_types[ANY_MAX];
static size_t n_any_types;

void pbjson_register_any(const ProtobufCMessageDescriptor *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < n_any_types; i++)
        if (strcmp(any_types[i]->name, d->name) == 0)
            return;
    if (n_any_types < ANY_MAX)
        any_types[n_any_types++] = d;
}

static const ProtobufCMessageDescriptor *any_lookup(const char *type_url)
{
    static const ProtobufCMessageDescriptor *const builtin[] = {
        &google__rpc__bad_request__descriptor,   &google__rpc__retry_info__descriptor,
        &google__rpc__status__descriptor,        &google__protobuf__timestamp__descriptor,
        &google__protobuf__duration__descriptor, &google__protobuf__field_mask__descriptor,
        &google__protobuf__empty__descriptor};
    if (!type_url)
        return NULL;
    const char *slash = strrchr(type_url, '/');
    const char *name = slash ? slash + 1 : type_url;
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
        if (strcmp(builtin[i]->name, name) == 0)
            return builtin[i];
    for (size_t i = 0; i < n_any_types; i++)
        if (strcmp(any_types[i]->name, name) == 0)
            return any_types[i];
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Time, base64 and name conversions
 * ------------------------------------------------------------------------------------------- */

/* Howard Hinnant's days_from_civil / civil_from_days: exact for the proleptic Gregorian calendar,
 * no dependency on the C library's time zone state. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* RFC 3339: YYYY-MM-DDTHH:MM:SS[.1-9 digits](Z|+HH:MM|-HH:MM). */
static bool parse_timestamp(const char *s, size_t n, int64_t *secs, int32_t *nanos)
{
    int y, mo, d, h, mi, se;
    if (n < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2, &h) ||
        s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &se))
        return false;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || se > 59)
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[mo - 1] + (mo == 2 && leap))
        return false;
    size_t i = 19;
    int32_t ns = 0;
    if (i < n && s[i] == '.') {
        i++;
        int nd = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (++nd > 9)
                return false;
            ns = ns * 10 + (s[i] - '0');
            i++;
        }
        if (nd == 0)
            return false;
        for (; nd < 9; nd++)
            ns *= 10;
    }
    int64_t off = 0;
    if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i < n && (s[i] == '+' || s[i] == '-')) {
        int oh, om;
        if (n - i < 6 || !digits(s + i + 1, 2, &oh) || s[i + 3] != ':' ||
            !digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
            return false;
        off = (int64_t)(oh * 3600 + om * 60) * (s[i] == '-' ? -1 : 1);
        i += 6;
    } else {
        return false;
    }
    if (i != n)
        return false;
    int64_t t =
        days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se - off;
    if (t < TS_MIN_SECONDS || t > TS_MAX_SECONDS)
        return false;
    *secs = t;
    *nanos = ns;
    return true;
}

/* "-?digits(.1-9 digits)?s" */
static bool parse_duration(const char *s, size_t n, int64_t *secs, int32_t *nanos)
{
    size_t i = 0;
    bool neg = false;
    if (n < 2 || s[n - 1] != 's')
        return false;
    n--;
    if (s[0] == '-') {
        neg = true;
        i++;
    }
    int64_t sec = 0;
    size_t start = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        if (i - start >= 12)
            return false;
        sec = sec * 10 + (s[i] - '0');
        i++;
    }
    if (i == start)
        return false;
    int32_t ns = 0;
    if (i < n && s[i] == '.') {
        i++;
        int nd = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (++nd > 9)
                return false;
            ns = ns * 10 + (s[i] - '0');
            i++;
        }
        if (nd == 0)
            return false;
        for (; nd < 9; nd++)
            ns *= 10;
    }
    if (i != n || sec > DUR_MAX_SECONDS)
        return false;
    *secs = neg ? -sec : sec;
    *nanos = neg ? -ns : ns;
    return true;
}

static const char b64std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/* Standard or URL-safe alphabet, padding optional (as protojson accepts). */
static bool b64_decode(arena *a, const char *s, size_t n, ProtobufCBinaryData *out)
{
    while (n > 0 && s[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return false;
    uint8_t *p = arena_alloc(a, n / 4 * 3 + 3);
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64val((unsigned char)s[i]);
        if (v < 0)
            return false;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            p[o++] = (uint8_t)(acc >> bits);
        }
    }
    out->data = p;
    out->len = o;
    return true;
}

/* "update_mask" <-> "updateMask" for FieldMask paths (per dotted segment, as protojson). */
static char *snake_of(arena *a, const char *s, size_t n)
{
    char *o = arena_alloc(a, 2 * n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] >= 'A' && s[i] <= 'Z') {
            o[k++] = '_';
            o[k++] = (char)(s[i] - 'A' + 'a');
        } else {
            o[k++] = s[i];
        }
    }
    o[k] = '\0';
    return o;
}

char *pbjson_camel(const char *proto_name, arena *a)
{
    size_t n = strlen(proto_name);
    char *o = arena_alloc(a, n + 1);
    size_t k = 0;
    bool up = false;
    for (size_t i = 0; i < n; i++) {
        if (proto_name[i] == '_') {
            up = true;
            continue;
        }
        o[k++] = up ? (char)toupper((unsigned char)proto_name[i]) : proto_name[i];
        up = false;
    }
    o[k] = '\0';
    return o;
}

/* ---------------------------------------------------------------------------------------------
 * Encoder
 * ------------------------------------------------------------------------------------------- */

typedef struct enc {
    char *p;
    size_t len, cap;
    arena *a;
    bool omit;
    int depth;
} enc;

static void put(enc *x, const char *s, size_t n)
{
    if (x->len + n + 1 > x->cap) {
        size_t c = x->cap ? x->cap : 512;
        while (c < x->len + n + 1)
            c *= 2;
        x->p = xrealloc(x->p, c);
        x->cap = c;
    }
    memcpy(x->p + x->len, s, n);
    x->len += n;
}

static void putc_(enc *x, char c)
{
    put(x, &c, 1);
}
static void puts_(enc *x, const char *s)
{
    put(x, s, strlen(s));
}

/* An integer given as sign and magnitude; quoted as proto3 JSON writes 64-bit ones. */
static void put_int(enc *x, bool neg, uint64_t mag, bool quoted)
{
    char tmp[FMT_INT_MAX + 2];
    size_t n = 0;
    if (quoted)
        tmp[n++] = '"';
    if (neg)
        tmp[n++] = '-';
    n += fmt_u64(tmp + n, mag);
    if (quoted)
        tmp[n++] = '"';
    put(x, tmp, n);
}

static void put_signed(enc *x, int64_t v, bool quoted)
{
    /* The magnitude in unsigned arithmetic: -INT64_MIN overflows int64_t. */
    put_int(x, v < 0, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v, quoted);
}

/* ".123", ".123456" or ".123456789": the shortest of the three that holds nanos exactly (none
 * for 0), as protojson writes Timestamp and Duration. */
static void put_nanos(enc *x, int32_t nanos)
{
    char tmp[10];
    tmp[0] = '.';
    if (nanos == 0)
        return;
    if (nanos % 1000000 == 0) {
        fmt_zpad(tmp + 1, (uint32_t)(nanos / 1000000), 3);
        put(x, tmp, 4);
    } else if (nanos % 1000 == 0) {
        fmt_zpad(tmp + 1, (uint32_t)(nanos / 1000), 6);
        put(x, tmp, 7);
    } else {
        fmt_zpad(tmp + 1, (uint32_t)nanos, 9);
        put(x, tmp, 10);
    }
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (n < need + 1)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i <= need; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return need + 1;
}

/* JSON string; invalid UTF-8 (protobuf-c does not check it) becomes U+FFFD so output stays JSON. */
static void put_str(enc *x, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    putc_(x, '"');
    size_t run = 0; /* start of the pending run of bytes that need no escaping */
    size_t i = 0;
    while (i < n) {
        unsigned char c = u[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t l = utf8_len(u + i, n - i);
            if (l) {
                i += l;
                continue;
            }
        }
        put(x, s + run, i - run);
        switch (c) {
        case '"':
            put(x, "\\\"", 2);
            break;
        case '\\':
            put(x, "\\\\", 2);
            break;
        case '\n':
            put(x, "\\n", 2);
            break;
        case '\r':
            put(x, "\\r", 2);
            break;
        case '\t':
            put(x, "\\t", 2);
            break;
        case '\b':
            put(x, "\\b", 2);
            break;
        case '\f':
            put(x, "\\f", 2);
            break;
        default:
            if (c < 0x20) {
                char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                put(x, esc, 6);
            } else {
                put(x, "\xEF\xBF\xBD", 3); /* invalid byte → U+FFFD */
            }
        }
        i++;
        run = i;
    }
    put(x, s + run, n - run);
    putc_(x, '"');
}

/* Shortest text that reads back as the same value, as protojson (Go's 'g', -1) does. */
static void put_double(enc *x, double v, bool is_float)
{
    if (isnan(v)) {
        puts_(x, "\"NaN\"");
        return;
    }
    if (isinf(v)) {
        puts_(x, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        return;
    }
    char tmp[48];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        double r = strtod(tmp, NULL);
        if (is_float ? (float)r == (float)v : r == v)
            break;
    }
    puts_(x, tmp);
}

static void put_base64(enc *x, const uint8_t *d, size_t n)
{
    putc_(x, '"');
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)d[i + 1] << 8;
        if (i + 2 < n)
            v |= d[i + 2];
        char q[4] = {b64std[(v >> 18) & 63], b64std[(v >> 12) & 63],
                     i + 1 < n ? b64std[(v >> 6) & 63] : '=', i + 2 < n ? b64std[v & 63] : '='};
        put(x, q, 4);
    }
    putc_(x, '"');
}

static void put_timestamp(enc *x, int64_t secs, int32_t nanos)
{
    /* Out-of-range values cannot be represented in RFC 3339: clamp rather than fail, since the
     * encoder has no error path (protojson would refuse such a message). */
    if (secs < TS_MIN_SECONDS)
        secs = TS_MIN_SECONDS;
    if (secs > TS_MAX_SECONDS)
        secs = TS_MAX_SECONDS;
    if (nanos < 0)
        nanos = 0;
    if (nanos > 999999999)
        nanos = 999999999;
    int64_t days = secs / 86400, rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    /* '"YYYY-MM-DDThh:mm:ss': the clamp above keeps y within 0001..9999 */
    char tmp[21] = "\"0000-00-00T00:00:00";
    fmt_zpad(tmp + 1, (uint32_t)y, 4);
    fmt_zpad(tmp + 6, m, 2);
    fmt_zpad(tmp + 9, d, 2);
    fmt_zpad(tmp + 12, (uint32_t)(rem / 3600), 2);
    fmt_zpad(tmp + 15, (uint32_t)(rem / 60 % 60), 2);
    fmt_zpad(tmp + 18, (uint32_t)(rem % 60), 2);
    put(x, tmp, 20);
    put_nanos(x, nanos);
    put(x, "Z\"", 2);
}

static void put_duration(enc *x, int64_t secs, int32_t nanos)
{
    bool neg = secs < 0 || nanos < 0;
    uint64_t s = secs < 0 ? (uint64_t)0 - (uint64_t)secs : (uint64_t)secs;
    int32_t ns = nanos < 0 ? -nanos : nanos;
    if (ns > 999999999)
        ns = 999999999;
    putc_(x, '"');
    put_int(x, neg, s, false);
    put_nanos(x, ns);
    put(x, "s\"", 2);
}

static void put_fieldmask(enc *x, const Google__Protobuf__FieldMask *fm)
{
    putc_(x, '"');
    for (size_t i = 0; i < fm->n_paths; i++) {
        if (i)
            putc_(x, ',');
        const char *p = fm->paths[i] ? fm->paths[i] : "";
        char *c = pbjson_camel(p, x->a);
        /* Paths are identifiers; escaping keeps hostile content from breaking the JSON. */
        size_t mark = x->len;
        put_str(x, c, strlen(c));
        /* put_str added quotes: drop them, we are inside one string. */
        memmove(x->p + mark, x->p + mark + 1, x->len - mark - 2);
        x->len -= 2;
    }
    putc_(x, '"');
}

static void enc_message(enc *x, const ProtobufCMessage *m);

static void enc_value(enc *x, ProtobufCType t, const void *desc, const void *p)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        put_signed(x, *(const int32_t *)p, false);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        put_int(x, false, *(const uint32_t *)p, false);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        put_signed(x, *(const int64_t *)p, true);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        put_int(x, false, *(const uint64_t *)p, true);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        put_double(x, *(const float *)p, true);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        put_double(x, *(const double *)p, false);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        puts_(x, *(const protobuf_c_boolean *)p ? "true" : "false");
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(desc, v);
        if (ev)
            put_str(x, ev->name, strlen(ev->name));
        else
            put_signed(x, v, false); /* open enum: a number we have no name for */
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        if (!s)
            s = "";
        put_str(x, s, strlen(s));
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        put_base64(x, b->data, b->data ? b->len : 0);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
        if (sub)
            enc_message(x, sub);
        else
            puts_(x, "null");
        break;
    }
    }
}

/* Map key as a JSON object key (always a string). */
static void enc_map_key(enc *x, const ProtobufCFieldDescriptor *kf, const void *p)
{
    if (kf->type == PROTOBUF_C_TYPE_STRING) {
        enc_value(x, kf->type, kf->descriptor, p);
        return;
    }
    if (kf->type == PROTOBUF_C_TYPE_BOOL) {
        puts_(x, *(const protobuf_c_boolean *)p ? "\"true\"" : "\"false\"");
        return;
    }
    size_t mark = x->len;
    enc_value(x, kf->type, kf->descriptor, p);
    if (x->p[mark] != '"') { /* 32-bit numbers are bare: quote them */
        put(x, "\"", 1);
        memmove(x->p + mark + 1, x->p + mark, x->len - mark - 1);
        x->p[mark] = '"';
        putc_(x, '"');
    }
}

static bool value_is_zero(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return !s || !*s;
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(void *const *)p == NULL;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)p == 0 && !signbit(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)p == 0 && !signbit(*(const double *)p);
    default: {
        size_t sz = elem_size(f->type);
        return sz == 8 ? *(const uint64_t *)p == 0 : *(const uint32_t *)p == 0;
    }
    }
}

static void enc_fields(enc *x, const ProtobufCMessage *m, bool first)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const void *p = base + f->offset;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            /* Unset oneof members are never emitted, even with EmitUnpopulated (protojson). */
            if (*(const uint32_t *)(base + f->quantifier_offset) != f->id)
                continue;
        } else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            if (x->omit && *(const size_t *)(base + f->quantifier_offset) == 0)
                continue;
        } else if (x->omit) {
            if (has_flag(f) ? !*(const protobuf_c_boolean *)(base + f->quantifier_offset)
                            : value_is_zero(f, p))
                continue;
        }
        if (!first)
            putc_(x, ',');
        first = false;
        put_str(x, f->name, strlen(f->name));
        putc_(x, ':');
        if (f->label != PROTOBUF_C_LABEL_REPEATED) {
            enc_value(x, f->type, f->descriptor, p);
            continue;
        }
        size_t n = *(const size_t *)(base + f->quantifier_offset);
        const char *arr = *(char *const *)p;
        if (!arr)
            n = 0;
        if (is_map_field(d, f)) {
            putc_(x, '{');
            const ProtobufCMessageDescriptor *ed = f->descriptor;
            size_t k = 0;
            for (size_t j = 0; j < n; j++) {
                const char *entry = ((char *const *)arr)[j];
                if (!entry)
                    continue;
                if (k++)
                    putc_(x, ',');
                enc_map_key(x, &ed->fields[0], entry + ed->fields[0].offset);
                putc_(x, ':');
                enc_value(x, ed->fields[1].type, ed->fields[1].descriptor,
                          entry + ed->fields[1].offset);
            }
            putc_(x, '}');
            continue;
        }
        size_t es = elem_size(f->type);
        putc_(x, '[');
        for (size_t j = 0; j < n; j++) {
            if (j)
                putc_(x, ',');
            enc_value(x, f->type, f->descriptor, arr + j * es);
        }
        putc_(x, ']');
    }
}

static void enc_any(enc *x, const Google__Protobuf__Any *any)
{
    const char *url = any->type_url ? any->type_url : "";
    const ProtobufCMessageDescriptor *d = any_lookup(url);
    ProtobufCMessage *inner = NULL;
    if (d) {
        ProtobufCAllocator al;
        arena_pb_allocator(x->a, &al);
        inner = protobuf_c_message_unpack(d, &al, any->value.len, any->value.data);
    }
    puts_(x, "{\"@type\":");
    put_str(x, url, strlen(url));
    if (!inner) {
        /* Unknown type or undecodable bytes: keep the payload visible rather than fail. */
        puts_(x, ",\"value\":");
        put_base64(x, any->value.data, any->value.data ? any->value.len : 0);
    } else if (wkt_kind(d) != WKT_NONE) {
        puts_(x, ",\"value\":");
        enc_message(x, inner);
    } else {
        enc_fields(x, inner, false);
    }
    putc_(x, '}');
}

static void enc_message(enc *x, const ProtobufCMessage *m)
{
    if (x->depth >= PBJSON_ENC_DEPTH) {
        puts_(x, "null");
        return;
    }
    x->depth++;
    switch (wkt_kind(m->descriptor)) {
    case WKT_TIMESTAMP: {
        const Google__Protobuf__Timestamp *t = (const void *)m;
        put_timestamp(x, t->seconds, t->nanos);
        break;
    }
    case WKT_DURATION: {
        const Google__Protobuf__Duration *t = (const void *)m;
        put_duration(x, t->seconds, t->nanos);
        break;
    }
    case WKT_FIELDMASK:
        put_fieldmask(x, (const void *)m);
        break;
    case WKT_ANY:
        enc_any(x, (const void *)m);
        break;
    case WKT_WRAPPER: {
        const ProtobufCFieldDescriptor *f = &m->descriptor->fields[0];
        enc_value(x, f->type, f->descriptor, (const char *)m + f->offset);
        break;
    }
    case WKT_NONE:
        putc_(x, '{');
        enc_fields(x, m, true);
        putc_(x, '}');
        break;
    }
    x->depth--;
}

char *pbjson_encode(const ProtobufCMessage *m, const pbjson_opts *o, arena *a, size_t *len)
{
    enc x = {.a = a, .omit = o && o->omit_unpopulated};
    if (m)
        enc_message(&x, m);
    else
        puts_(&x, "null");
    char *out = arena_alloc(a, x.len + 1);
    memcpy(out, x.p, x.len);
    out[x.len] = '\0';
    free(x.p);
    if (len)
        *len = x.len;
    return out;
}

/* ---------------------------------------------------------------------------------------------
 * Decoder
 * ------------------------------------------------------------------------------------------- */

typedef struct dec {
    arena *a;
    err_info *e;
    bool failed;
    char path[256]; /* JSON path of the value being decoded, for violations */
    size_t plen;
} dec;

static void bad(dec *d, const char *fmt, ...) ERR_PRINTF(2, 3);
static void bad(dec *d, const char *fmt, ...)
{
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    d->failed = true;
    err_violation_add(d->e, d->plen ? d->path : "body", "%s", msg);
}

static size_t path_push_name(dec *d, const char *name)
{
    size_t old = d->plen;
    int n = snprintf(d->path + old, sizeof d->path - old, "%s%s", old ? "." : "", name);
    if (n > 0)
        d->plen = old + (size_t)n < sizeof d->path ? old + (size_t)n : sizeof d->path - 1;
    return old;
}

static size_t path_push_index(dec *d, size_t i)
{
    size_t old = d->plen;
    int n = snprintf(d->path + old, sizeof d->path - old, "[%zu]", i);
    if (n > 0)
        d->plen = old + (size_t)n < sizeof d->path ? old + (size_t)n : sizeof d->path - 1;
    return old;
}

static void path_pop(dec *d, size_t old)
{
    d->plen = old;
    d->path[old] = '\0';
}

/* Strict decimal integer text: -?[0-9]+, nothing else. */
static bool text_int(const char *s, bool allow_neg)
{
    if (allow_neg && *s == '-')
        s++;
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

static bool get_int(dec *d, json_t *v, int64_t min, int64_t max, const char *tn, int64_t *out)
{
    int64_t x;
    if (json_is_integer(v)) {
        x = (int64_t)json_integer_value(v);
    } else if (json_is_real(v)) {
        double r = json_real_value(v);
        if (r != floor(r)) {
            bad(d, "not an integer");
            return false;
        }
        if (r < -9223372036854775808.0 || r >= 9223372036854775808.0) {
            bad(d, "value out of range for %s", tn);
            return false;
        }
        x = (int64_t)r;
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!text_int(s, true)) {
            bad(d, "not an integer");
            return false;
        }
        errno = 0;
        long long ll = strtoll(s, NULL, 10);
        if (errno == ERANGE) {
            bad(d, "value out of range for %s", tn);
            return false;
        }
        x = ll;
    } else {
        bad(d, "expected an integer (%s)", tn);
        return false;
    }
    if (x < min || x > max) {
        bad(d, "value out of range for %s", tn);
        return false;
    }
    *out = x;
    return true;
}

static bool get_uint(dec *d, json_t *v, uint64_t max, const char *tn, uint64_t *out)
{
    uint64_t x;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0) {
            bad(d, "value out of range for %s", tn);
            return false;
        }
        x = (uint64_t)i;
    } else if (json_is_real(v)) {
        double r = json_real_value(v);
        if (r != floor(r)) {
            bad(d, "not an integer");
            return false;
        }
        if (r < 0 || r >= 18446744073709551616.0) {
            bad(d, "value out of range for %s", tn);
            return false;
        }
        x = (uint64_t)r;
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (*s == '-' && text_int(s, true)) {
            bad(d, "value out of range for %s", tn);
            return false;
        }
        if (!text_int(s, false)) {
            bad(d, "not an integer");
            return false;
        }
        errno = 0;
        unsigned long long ull = strtoull(s, NULL, 10);
        if (errno == ERANGE) {
            bad(d, "value out of range for %s", tn);
            return false;
        }
        x = ull;
    } else {
        bad(d, "expected an integer (%s)", tn);
        return false;
    }
    if (x > max) {
        bad(d, "value out of range for %s", tn);
        return false;
    }
    *out = x;
    return true;
}

static bool get_double(dec *d, json_t *v, bool is_float, double *out)
{
    double r;
    if (json_is_number(v)) {
        r = json_number_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (strcmp(s, "NaN") == 0)
            r = NAN;
        else if (strcmp(s, "Infinity") == 0)
            r = INFINITY;
        else if (strcmp(s, "-Infinity") == 0)
            r = -INFINITY;
        else {
            /* A quoted JSON number: no spaces, hex, "inf" or "nan" spellings. */
            const char *q = s;
            if (*q == '-')
                q++;
            if (!(*q >= '0' && *q <= '9')) {
                bad(d, "expected a number");
                return false;
            }
            for (const char *c = q; *c; c++)
                if (!strchr("0123456789.eE+-", *c)) {
                    bad(d, "expected a number");
                    return false;
                }
            char *end;
            errno = 0;
            r = strtod(s, &end);
            if (*end || errno == ERANGE) {
                bad(d, errno == ERANGE ? "value out of range" : "expected a number");
                return false;
            }
        }
    } else {
        bad(d, "expected a number");
        return false;
    }
    if (is_float && isfinite(r) && fabs(r) > FLT_MAX) {
        bad(d, "value out of range for float");
        return false;
    }
    *out = r;
    return true;
}

static bool dec_msg_into(dec *d, const ProtobufCMessageDescriptor *md, json_t *v,
                         ProtobufCMessage **slot, bool merge);

/* Decodes one (non-repeated) value of field type t into p. v is not JSON null. */
static bool dec_value(dec *d, const ProtobufCFieldDescriptor *f, json_t *v, void *p, bool merge)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: {
        int64_t x;
        if (!get_int(d, v, INT32_MIN, INT32_MAX, "int32", &x))
            return false;
        *(int32_t *)p = (int32_t)x;
        return true;
    }
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: {
        int64_t x;
        if (!get_int(d, v, INT64_MIN, INT64_MAX, "int64", &x))
            return false;
        *(int64_t *)p = x;
        return true;
    }
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: {
        uint64_t x;
        if (!get_uint(d, v, UINT32_MAX, "uint32", &x))
            return false;
        *(uint32_t *)p = (uint32_t)x;
        return true;
    }
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: {
        uint64_t x;
        if (!get_uint(d, v, UINT64_MAX, "uint64", &x))
            return false;
        *(uint64_t *)p = x;
        return true;
    }
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE: {
        double r;
        if (!get_double(d, v, f->type == PROTOBUF_C_TYPE_FLOAT, &r))
            return false;
        if (f->type == PROTOBUF_C_TYPE_FLOAT)
            *(float *)p = (float)r;
        else
            *(double *)p = r;
        return true;
    }
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v)) {
            bad(d, "expected true or false");
            return false;
        }
        *(protobuf_c_boolean *)p = json_is_true(v);
        return true;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        if (json_is_string(v)) {
            const ProtobufCEnumValue *ev =
                protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(v));
            if (!ev) {
                bad(d, "unknown value for enum %s", ed->short_name);
                return false;
            }
            *(int *)p = ev->value;
            return true;
        }
        if (json_is_integer(v) || json_is_real(v)) {
            int64_t x;
            if (!get_int(d, v, INT32_MIN, INT32_MAX, "enum", &x))
                return false;
            *(int *)p = (int)x;
            return true;
        }
        bad(d, "expected an enum name or number (%s)", ed->short_name);
        return false;
    }
    case PROTOBUF_C_TYPE_STRING:
        if (!json_is_string(v)) {
            bad(d, "expected a string");
            return false;
        }
        /* jansson has already checked UTF-8 and, without JSON_ALLOW_NUL, refused "\u0000", which
         * would silently truncate a C string ("a\u0000@b" read as "a"). */
        *(char **)p = arena_strndup(d->a, json_string_value(v), json_string_length(v));
        return true;
    case PROTOBUF_C_TYPE_BYTES:
        if (!json_is_string(v) ||
            !b64_decode(d->a, json_string_value(v), json_string_length(v), p)) {
            bad(d, "expected base64 data");
            return false;
        }
        return true;
    case PROTOBUF_C_TYPE_MESSAGE:
        return dec_msg_into(d, f->descriptor, v, (ProtobufCMessage **)p, merge);
    }
    return false;
}

static void dec_object(dec *d, ProtobufCMessage *m, json_t *obj, bool skip_type);

static bool dec_any(dec *d, Google__Protobuf__Any *any, json_t *v)
{
    json_t *t = json_object_get(v, "@type");
    if (!json_is_string(t)) {
        size_t old = path_push_name(d, "@type");
        bad(d, "missing type URL");
        path_pop(d, old);
        return false;
    }
    const char *url = json_string_value(t);
    const ProtobufCMessageDescriptor *md = any_lookup(url);
    if (!md) {
        size_t old = path_push_name(d, "@type");
        bad(d, "unknown type");
        path_pop(d, old);
        return false;
    }
    ProtobufCMessage *inner = new_msg(d->a, md);
    bool before = d->failed;
    d->failed = false;
    if (wkt_kind(md) != WKT_NONE) {
        json_t *val = json_object_get(v, "value");
        size_t old = path_push_name(d, "value");
        if (!val || json_is_null(val))
            bad(d, "missing value");
        else
            dec_msg_into(d, md, val, &inner, true);
        path_pop(d, old);
    } else {
        dec_object(d, inner, v, true);
    }
    bool ok = !d->failed;
    d->failed = d->failed || before;
    if (!ok)
        return false;
    size_t n = protobuf_c_message_get_packed_size(inner);
    uint8_t *buf = arena_alloc(d->a, n ? n : 1);
    protobuf_c_message_pack(inner, buf);
    any->type_url = arena_strdup(d->a, url);
    any->value.data = buf;
    any->value.len = n;
    return true;
}

static bool dec_fieldmask(dec *d, Google__Protobuf__FieldMask *fm, const char *s)
{
    size_t count = 0, len = strlen(s);
    if (len == 0) {
        fm->n_paths = 0;
        fm->paths = NULL;
        return true;
    }
    for (const char *c = s; *c; c++)
        count += *c == ',';
    char **paths = arena_alloc(d->a, (count + 1) * sizeof *paths);
    size_t k = 0;
    const char *p = s;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *b = p;
        while (n && (*b == ' ' || *b == '\t')) {
            b++;
            n--;
        }
        while (n && (b[n - 1] == ' ' || b[n - 1] == '\t'))
            n--;
        if (n == 0) {
            bad(d, "empty path in field mask");
            return false;
        }
        for (size_t i = 0; i < n; i++)
            if (!(isalnum((unsigned char)b[i]) || b[i] == '_' || b[i] == '.')) {
                bad(d, "invalid field mask path");
                return false;
            }
        paths[k++] = snake_of(d->a, b, n);
        if (!end)
            break;
        p = end + 1;
    }
    fm->paths = paths;
    fm->n_paths = k;
    return true;
}

/* Decodes v (not null) as message type md into *slot; merges into *slot when merge and set. */
static bool dec_msg_into(dec *d, const ProtobufCMessageDescriptor *md, json_t *v,
                         ProtobufCMessage **slot, bool merge)
{
    wkt k = wkt_kind(md);
    ProtobufCMessage *m = merge && *slot ? *slot : NULL;
    switch (k) {
    case WKT_TIMESTAMP:
    case WKT_DURATION: {
        int64_t s;
        int32_t ns;
        bool ok = json_is_string(v) &&
                  (k == WKT_TIMESTAMP
                       ? parse_timestamp(json_string_value(v), json_string_length(v), &s, &ns)
                       : parse_duration(json_string_value(v), json_string_length(v), &s, &ns));
        if (!ok) {
            bad(d, k == WKT_TIMESTAMP ? "expected an RFC 3339 timestamp (2006-01-02T15:04:05Z)"
                                      : "expected a duration in seconds (\"1.5s\")");
            return false;
        }
        if (!m)
            m = new_msg(d->a, md);
        if (k == WKT_TIMESTAMP) {
            ((Google__Protobuf__Timestamp *)(void *)m)->seconds = s;
            ((Google__Protobuf__Timestamp *)(void *)m)->nanos = ns;
        } else {
            ((Google__Protobuf__Duration *)(void *)m)->seconds = s;
            ((Google__Protobuf__Duration *)(void *)m)->nanos = ns;
        }
        break;
    }
    case WKT_FIELDMASK: {
        if (!json_is_string(v)) {
            bad(d, "expected a field mask (\"a,b.c\")");
            return false;
        }
        if (!m)
            m = new_msg(d->a, md);
        if (!dec_fieldmask(d, (void *)m, json_string_value(v)))
            return false;
        break;
    }
    case WKT_ANY:
        if (!json_is_object(v)) {
            bad(d, "expected an object");
            return false;
        }
        if (!m)
            m = new_msg(d->a, md);
        if (!dec_any(d, (void *)m, v))
            return false;
        break;
    case WKT_WRAPPER: {
        if (!m)
            m = new_msg(d->a, md);
        const ProtobufCFieldDescriptor *f = &md->fields[0];
        if (!dec_value(d, f, v, (char *)m + f->offset, false))
            return false;
        break;
    }
    case WKT_NONE: {
        if (!json_is_object(v)) {
            bad(d, "expected an object");
            return false;
        }
        if (!m)
            m = new_msg(d->a, md);
        bool before = d->failed;
        d->failed = false;
        dec_object(d, m, v, false);
        bool ok = !d->failed;
        d->failed = d->failed || before;
        if (!ok)
            return false;
        break;
    }
    }
    *slot = m;
    return true;
}

/* Map key from its JSON object key text. */
static bool dec_map_key(dec *d, const ProtobufCFieldDescriptor *kf, const char *key, void *p)
{
    json_t *kv;
    if (kf->type == PROTOBUF_C_TYPE_BOOL) {
        if (strcmp(key, "true") != 0 && strcmp(key, "false") != 0) {
            bad(d, "expected a map key of true or false");
            return false;
        }
        kv = json_boolean(key[0] == 't');
    } else {
        kv = json_string(key);
    }
    bool ok = kv && dec_value(d, kf, kv, p, false);
    json_decref(kv);
    return ok;
}

static void dec_repeated(dec *d, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, json_t *v)
{
    char *base = (char *)m;
    if (is_map_field(m->descriptor, f)) {
        if (!json_is_object(v)) {
            bad(d, "expected an object (map)");
            return;
        }
        const ProtobufCMessageDescriptor *ed = f->descriptor;
        size_t n = json_object_size(v), k = 0;
        ProtobufCMessage **arr = arena_alloc(d->a, (n ? n : 1) * sizeof *arr);
        const char *key;
        json_t *val;
        json_object_foreach(v, key, val)
        {
            size_t old = path_push_name(d, key);
            ProtobufCMessage *entry = new_msg(d->a, ed);
            bool ok = dec_map_key(d, &ed->fields[0], key, (char *)entry + ed->fields[0].offset);
            if (ok && json_is_null(val) && ed->fields[1].type != PROTOBUF_C_TYPE_MESSAGE) {
                bad(d, "null is not a valid map value");
                ok = false;
            }
            if (ok && !json_is_null(val))
                ok = dec_value(d, &ed->fields[1], val, (char *)entry + ed->fields[1].offset, false);
            if (ok)
                arr[k++] = entry;
            path_pop(d, old);
        }
        *(size_t *)(base + f->quantifier_offset) = k;
        *(void **)(base + f->offset) = arr;
        return;
    }
    if (!json_is_array(v)) {
        bad(d, "expected an array");
        return;
    }
    size_t n = json_array_size(v), es = elem_size(f->type);
    char *arr = arena_alloc(d->a, (n ? n : 1) * es);
    for (size_t i = 0; i < n; i++) {
        size_t old = path_push_index(d, i);
        json_t *el = json_array_get(v, i);
        if (json_is_null(el))
            bad(d, "null is not a valid array element");
        else
            dec_value(d, f, el, arr + i * es, false);
        path_pop(d, old);
    }
    *(size_t *)(base + f->quantifier_offset) = n;
    *(void **)(base + f->offset) = n ? arr : NULL;
}

/* Sets a singular field: the value, then its presence (has_ flag or oneof case). */
static void dec_singular(dec *d, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, json_t *v)
{
    char *base = (char *)m;
    bool oneof = f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF;
    /* Merge into an existing sub-message only when the slot really holds this field. */
    bool merge = !oneof || *(uint32_t *)(base + f->quantifier_offset) == f->id;
    char tmp[sizeof(ProtobufCBinaryData) + sizeof(double)] = {0};
    void *p = base + f->offset;
    /* Decode into a copy so a failed value leaves the field (and a oneof's union) untouched; a
     * union slot holding another member starts from zero. */
    if (merge)
        memcpy(tmp, p, elem_size(f->type));
    if (!dec_value(d, f, v, tmp, merge))
        return;
    memcpy(p, tmp, elem_size(f->type));
    if (oneof)
        *(uint32_t *)(base + f->quantifier_offset) = f->id;
    else if (has_flag(f))
        *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
}

static void dec_object(dec *d, ProtobufCMessage *m, json_t *obj, bool skip_type)
{
    const ProtobufCMessageDescriptor *md = m->descriptor;
    const char *seen_key_small[64]; /* per field: the JSON key that set it (duplicates, oneofs) */
    const char **seen_key =
        md->n_fields <= 64 ? seen_key_small : arena_alloc(d->a, md->n_fields * sizeof(char *));
    memset(seen_key, 0, (md->n_fields <= 64 ? 64 : md->n_fields) * sizeof(char *));
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        if (skip_type && strcmp(key, "@type") == 0)
            continue;
        const ProtobufCFieldDescriptor *f = field_by_key(md, key);
        if (!f)
            continue; /* unknown fields are ignored (grpc-gateway's DiscardUnknown) */
        size_t idx = (size_t)(f - md->fields);
        size_t old = path_push_name(d, f->name);
        if (seen_key[idx]) {
            bad(d, "field given twice (\"%s\" and \"%s\")", seen_key[idx], key);
            path_pop(d, old);
            continue;
        }
        seen_key[idx] = key;
        if (json_is_null(v)) { /* null = leave unset */
            path_pop(d, old);
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            for (unsigned j = 0; j < md->n_fields; j++) {
                const ProtobufCFieldDescriptor *g = &md->fields[j];
                if (j != idx && seen_key[j] && (g->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
                    g->quantifier_offset == f->quantifier_offset &&
                    !json_is_null(json_object_get(obj, seen_key[j]))) {
                    bad(d, "only one field of a oneof may be set (\"%s\" is set too)", g->name);
                    break;
                }
            }
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED)
            dec_repeated(d, m, f, v);
        else
            dec_singular(d, m, f, v);
        path_pop(d, old);
    }
}

/* Rejects documents nested deeper than PBJSON_MAX_DEPTH before we recurse over them. */
static bool depth_ok(json_t *v, int depth)
{
    if (depth > PBJSON_MAX_DEPTH)
        return false;
    if (json_is_object(v)) {
        const char *k;
        json_t *c;
        json_object_foreach(v, k, c)
        {
            if ((json_is_object(c) || json_is_array(c)) && !depth_ok(c, depth + 1))
                return false;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *c;
        json_array_foreach(v, i, c)
        {
            if ((json_is_object(c) || json_is_array(c)) && !depth_ok(c, depth + 1))
                return false;
        }
    }
    return true;
}

/* Parses and checks the document; NULL with a violation on "body" when it is not usable. */
static json_t *load_body(const char *json, size_t len, err_info *e)
{
    json_error_t je;
    json_t *root = json_loadb(json ? json : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root) {
        switch (json_error_code(&je)) {
        case json_error_invalid_utf8:
            err_violation_add(e, "body", "invalid UTF-8 at byte %d", je.position);
            break;
        case json_error_duplicate_key:
            err_violation_add(e, "body", "duplicate key: %s", je.text);
            break;
        default:
            err_violation_add(e, "body", "malformed JSON at line %d column %d: %s", je.line,
                              je.column, je.text);
        }
        return NULL;
    }
    if (!json_is_object(root)) {
        err_violation_add(e, "body", "expected a JSON object");
        json_decref(root);
        return NULL;
    }
    if (!depth_ok(root, 1)) {
        err_violation_add(e, "body", "JSON nested deeper than %d levels", PBJSON_MAX_DEPTH);
        json_decref(root);
        return NULL;
    }
    return root;
}

err_code pbjson_merge(ProtobufCMessage *m, const char *json, size_t len, arena *a, err_info *e)
{
    if (len == 0)
        return ERR_OK;
    json_t *root = load_body(json, len, e);
    if (!root)
        return ERR_INVALID_ARGUMENT;
    dec d = {.a = a, .e = e};
    ProtobufCMessage *mm = m;
    dec_msg_into(&d, m->descriptor, root, &mm, true);
    json_decref(root);
    return d.failed ? ERR_INVALID_ARGUMENT : ERR_OK;
}

err_code pbjson_decode(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                       arena *a, ProtobufCMessage **out, err_info *e)
{
    ProtobufCMessage *m = new_msg(a, desc);
    *out = NULL;
    err_code rc = pbjson_merge(m, json, len, a, e);
    if (rc == ERR_OK)
        *out = m;
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Path and query parameters
 * ------------------------------------------------------------------------------------------- */

/* The JSON value a text parameter stands for, so it goes through the same checks as a body. */
static json_t *text_value(const ProtobufCFieldDescriptor *f, const char *text)
{
    if (f->type == PROTOBUF_C_TYPE_BOOL) {
        if (!strcasecmp(text, "true") || !strcmp(text, "1") || !strcasecmp(text, "t"))
            return json_true();
        if (!strcasecmp(text, "false") || !strcmp(text, "0") || !strcasecmp(text, "f"))
            return json_false();
        return json_string("not a bool"); /* fails the bool check with the usual message */
    }
    if (f->type == PROTOBUF_C_TYPE_ENUM && text_int(text, true)) {
        errno = 0;
        long long v = strtoll(text, NULL, 10);
        if (errno == ERANGE)
            v = INT64_MAX;
        return json_integer(v);
    }
    if (f->type == PROTOBUF_C_TYPE_MESSAGE &&
        wkt_kind(f->descriptor) == WKT_WRAPPER) /* the wrapped scalar's own text form */
        return text_value(&((const ProtobufCMessageDescriptor *)f->descriptor)->fields[0], text);
    return json_string(text); /* NULL when text is not UTF-8 */
}

err_code pbjson_set_path(ProtobufCMessage *m, const char *path, const char *text, arena *a,
                         err_info *e)
{
    dec d = {.a = a, .e = e};
    snprintf(d.path, sizeof d.path, "%s", path ? path : "");
    d.plen = strlen(d.path);
    if (!path || !*path || !text) {
        bad(&d, "unknown field");
        return ERR_INVALID_ARGUMENT;
    }
    const char *seg = path;
    for (;;) {
        const char *dot = strchr(seg, '.');
        size_t n = dot ? (size_t)(dot - seg) : strlen(seg);
        char name[128];
        if (n == 0 || n >= sizeof name) {
            bad(&d, "unknown field");
            return ERR_INVALID_ARGUMENT;
        }
        memcpy(name, seg, n);
        name[n] = '\0';
        const ProtobufCFieldDescriptor *f = field_by_key(m->descriptor, name);
        if (!f) {
            bad(&d, "unknown field");
            return ERR_INVALID_ARGUMENT;
        }
        char *base = (char *)m;
        if (dot) { /* intermediate: a singular, ordinary message */
            if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label == PROTOBUF_C_LABEL_REPEATED ||
                wkt_kind(f->descriptor) != WKT_NONE) {
                bad(&d, "unknown field");
                return ERR_INVALID_ARGUMENT;
            }
            ProtobufCMessage **slot = (ProtobufCMessage **)(base + f->offset);
            bool oneof = f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF;
            if (oneof && *(uint32_t *)(base + f->quantifier_offset) != f->id)
                *slot = NULL;
            if (!*slot)
                *slot = new_msg(a, f->descriptor);
            if (oneof)
                *(uint32_t *)(base + f->quantifier_offset) = f->id;
            m = *slot;
            seg = dot + 1;
            continue;
        }
        if (f->type == PROTOBUF_C_TYPE_MESSAGE && wkt_kind(f->descriptor) == WKT_NONE) {
            bad(&d, "a message cannot be set from a parameter");
            return ERR_INVALID_ARGUMENT;
        }
        if (is_map_field(m->descriptor, f)) {
            bad(&d, "a map cannot be set from a parameter");
            return ERR_INVALID_ARGUMENT;
        }
        json_t *v = text_value(f, text);
        if (!v) {
            bad(&d, "invalid UTF-8");
            return ERR_INVALID_ARGUMENT;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t es = elem_size(f->type);
            size_t *np = (size_t *)(base + f->quantifier_offset);
            char **arrp = (char **)(base + f->offset);
            char *arr = arena_alloc(a, (*np + 1) * es);
            if (*np && *arrp)
                memcpy(arr, *arrp, *np * es);
            if (dec_value(&d, f, v, arr + *np * es, false)) {
                *arrp = arr;
                (*np)++;
            }
        } else {
            dec_singular(&d, m, f, v);
        }
        json_decref(v);
        return d.failed ? ERR_INVALID_ARGUMENT : ERR_OK;
    }
}

const char **pbjson_present_fields(const ProtobufCMessageDescriptor *desc, const char *json,
                                   size_t len, arena *a)
{
    json_error_t je;
    json_t *root = json_loadb(json ? json : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root)
        return NULL;
    if (!json_is_object(root)) {
        json_decref(root);
        return NULL;
    }
    bool *present = arena_alloc(a, desc->n_fields + 1);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        const ProtobufCFieldDescriptor *f = field_by_key(desc, key);
        if (f)
            present[f - desc->fields] = true;
    }
    json_decref(root);
    const char **out = arena_alloc(a, (desc->n_fields + 1) * sizeof *out);
    size_t k = 0;
    for (unsigned i = 0; i < desc->n_fields; i++)
        if (present[i])
            out[k++] = desc->fields[i].name;
    out[k] = NULL;
    return out;
}
