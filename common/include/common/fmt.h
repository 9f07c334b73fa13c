/* fmt: decimal and hex formatting without printf, for per-request paths (one snprintf costs
 * about a thousand instructions; these cost tens). */
#ifndef COMMON_FMT_H
#define COMMON_FMT_H

#include <stddef.h>
#include <stdint.h>

#define FMT_INT_MAX 21 /* "-9223372036854775808" + NUL */

/* Decimal digits of v and a NUL into out (at least FMT_INT_MAX bytes); returns the length. */
size_t fmt_u64(char *out, uint64_t v);
size_t fmt_i64(char *out, int64_t v);

/* Exactly width digits of v, zero-padded on the left (higher digits are dropped); no NUL. */
void fmt_zpad(char *out, uint32_t v, size_t width);

/* a then b into out (size bytes, NUL-terminated), cut at size - 1 as snprintf would; returns
 * the length written. */
size_t fmt_cat(char *out, size_t size, const char *a, const char *b);

/* Lower-case hex of b[0..n) and a NUL into out (2n + 1 bytes). */
void fmt_hex(const unsigned char *b, size_t n, char *out);

/* The value of one hex digit (either case), or -1 when c is not one. */
int fmt_hexval(char c);

#endif
