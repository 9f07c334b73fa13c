/* fmt: decimal and hex formatting without printf. */
#include "common/fmt.h"

#include <string.h>

size_t fmt_u64(char *out, uint64_t v)
{
    char tmp[FMT_INT_MAX];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = 0;
    return n;
}

size_t fmt_i64(char *out, int64_t v)
{
    if (v >= 0)
        return fmt_u64(out, (uint64_t)v);
    out[0] = '-';
    /* Negate in unsigned arithmetic: -INT64_MIN overflows int64_t. */
    return 1 + fmt_u64(out + 1, (uint64_t)0 - (uint64_t)v);
}

void fmt_zpad(char *out, uint32_t v, size_t width)
{
    for (size_t i = width; i > 0; i--) {
        out[i - 1] = (char)('0' + v % 10);
        v /= 10;
    }
}

void fmt_hex(const unsigned char *b, size_t n, char *out)
{
    static const char H[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = H[b[i] >> 4];
        out[2 * i + 1] = H[b[i] & 15];
    }
    out[2 * n] = 0;
}

int fmt_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

size_t fmt_cat(char *out, size_t size, const char *a, const char *b)
{
    if (size == 0)
        return 0;
    size_t n = 0;
    for (const char *s = a; s && *s && n + 1 < size; s++)
        out[n++] = *s;
    if (b) {
        size_t bl = strnlen(b, size - 1 - n);
        memcpy(out + n, b, bl);
        n += bl;
    }
    out[n] = 0;
    return n;
}
