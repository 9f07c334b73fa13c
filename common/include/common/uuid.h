/* uuid: the one check that a string is a UUID in its canonical 8-4-4-4-12 hex form. */
#ifndef COMMON_UUID_H
#define COMMON_UUID_H

#include <stdbool.h>
#include <stddef.h>

/* True when s[0..n) is 36 characters of 8-4-4-4-12 hex digits (either case). s may be NULL. */
bool uuid_valid_n(const char *s, size_t n);
/* The same for a NUL-terminated string. */
bool uuid_valid(const char *s);

#endif
