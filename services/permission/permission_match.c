/* permission_match: validation of names and permission strings, and wildcard matching. */
#include "permission_match.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/mem.h"

static bool is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
static bool is_name_char(char c)
{
    return is_lower_alnum(c) || c == '_' || c == '.' || c == '-';
}
static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool perm_role_name_valid(const char *s)
{
    if (!s || !(s[0] >= 'a' && s[0] <= 'z'))
        return false;
    size_t i = 1;
    for (; s[i]; i++) {
        if (i >= PERM_ROLE_NAME_MAX || !is_name_char(s[i]))
            return false;
    }
    return true;
}

bool perm_user_id_valid(const char *s)
{
    if (!s)
        return false;
    for (size_t i = 0; i < PERM_USER_ID_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!is_hex(s[i])) {
            return false; /* also stops at a short string's NUL */
        }
    }
    return s[PERM_USER_ID_LEN] == '\0';
}

void perm_user_id_normalize(const char *s, char *out)
{
    for (size_t i = 0; i < PERM_USER_ID_LEN; i++)
        out[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] - 'A' + 'a') : s[i];
    out[PERM_USER_ID_LEN] = '\0';
}

/* A segment [s, s+n): `*` (when star_ok) or [a-z0-9][a-z0-9_.-]{0,63}. */
static bool segment_valid(const char *s, size_t n, bool star_ok)
{
    if (n == 1 && s[0] == '*')
        return star_ok;
    if (n == 0 || n > PERM_SEGMENT_MAX || !is_lower_alnum(s[0]))
        return false;
    for (size_t i = 1; i < n; i++) {
        if (!is_name_char(s[i]))
            return false;
    }
    return true;
}

static bool perm_valid(const char *s, bool star_ok)
{
    if (!s)
        return false;
    if (star_ok && strcmp(s, "*") == 0)
        return true;
    const char *colon = strchr(s, ':');
    if (!colon)
        return false;
    return segment_valid(s, (size_t)(colon - s), star_ok) &&
           segment_valid(colon + 1, strlen(colon + 1), star_ok); /* a 2nd ':' fails here */
}

bool perm_pattern_valid(const char *s)
{
    return perm_valid(s, true);
}
bool perm_concrete_valid(const char *s)
{
    return perm_valid(s, false);
}

static bool seg_match(const char *pat, size_t plen, const char *seg, size_t slen)
{
    if (plen == 1 && pat[0] == '*')
        return true;
    return plen == slen && memcmp(pat, seg, slen) == 0;
}

bool perm_grants(const char *pattern, const char *perm)
{
    if (strcmp(pattern, "*") == 0)
        return true;
    const char *pc = strchr(pattern, ':');
    const char *c = strchr(perm, ':');
    if (!pc || !c)
        return false;
    return seg_match(pattern, (size_t)(pc - pattern), perm, (size_t)(c - perm)) &&
           seg_match(pc + 1, strlen(pc + 1), c + 1, strlen(c + 1));
}

/* Each pattern as two (offset, length) segments into one text buffer: matching compares lengths
 * first, so most non-matching entries cost one integer compare. */
typedef struct perm_entry {
    uint32_t res_off, act_off;
    uint8_t res_len, act_len; /* segments are <= 64 bytes */
    bool res_any, act_any;
} perm_entry;

struct perm_set {
    size_t n;
    bool all; /* `*` or `*:*` present: everything is granted */
    perm_entry *entries;
    char *text;
};

perm_set *perm_set_new(const char *const *patterns, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += strlen(patterns[i]) + 1;
    perm_set *s = xcalloc(1, sizeof *s);
    s->entries = xcalloc(n ? n : 1, sizeof *s->entries);
    s->text = xmalloc(total ? total : 1);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = patterns[i];
        if (!perm_pattern_valid(p))
            continue;
        if (strcmp(p, "*") == 0 || strcmp(p, "*:*") == 0) {
            s->all = true;
            continue;
        }
        size_t len = strlen(p);
        memcpy(s->text + off, p, len + 1);
        const char *colon = strchr(s->text + off, ':');
        perm_entry *e = &s->entries[s->n++];
        e->res_off = (uint32_t)off;
        e->res_len = (uint8_t)(colon - (s->text + off));
        e->act_off = (uint32_t)(colon + 1 - s->text);
        e->act_len = (uint8_t)(len - e->res_len - 1);
        e->res_any = e->res_len == 1 && s->text[e->res_off] == '*';
        e->act_any = e->act_len == 1 && s->text[e->act_off] == '*';
        off += len + 1;
    }
    return s;
}

void perm_set_free(perm_set *s)
{
    if (!s)
        return;
    free(s->entries);
    free(s->text);
    free(s);
}

size_t perm_set_count(const perm_set *s)
{
    return s->n + (s->all ? 1 : 0);
}

bool perm_set_allows(const perm_set *s, const char *perm)
{
    if (s->all)
        return true;
    const char *colon = strchr(perm, ':');
    if (!colon)
        return false;
    size_t rl = (size_t)(colon - perm), al = strlen(colon + 1);
    for (size_t i = 0; i < s->n; i++) {
        const perm_entry *e = &s->entries[i];
        if (!e->res_any && (e->res_len != rl || memcmp(s->text + e->res_off, perm, rl) != 0))
            continue;
        if (!e->act_any && (e->act_len != al || memcmp(s->text + e->act_off, colon + 1, al) != 0))
            continue;
        return true;
    }
    return false;
}
