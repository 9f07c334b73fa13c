/* transcode: fills request messages from HTTP parts in a fixed order (body, query, path, claims),
 * so a path parameter or a claim always wins over what a client put in the body. */
#include "transcode.h"

#include <string.h>

#include "common/pbjson.h"
#include "google/protobuf/field_mask.pb-c.h"

static ProtobufCMessage *new_msg(arena *a, const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = arena_alloc(a, d->sizeof_message);
    protobuf_c_message_init(d, m);
    return m;
}

/* Field of m at a dotted path: the containing message and the descriptor of the last part. */
static const ProtobufCFieldDescriptor *resolve(const ProtobufCMessage *m, const char *path,
                                               const ProtobufCMessage **holder)
{
    char part[64];
    const char *p = path;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n >= sizeof part || !m)
            return NULL;
        memcpy(part, p, n);
        part[n] = 0;
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(m->descriptor, part);
        if (!f)
            return NULL;
        if (!dot) {
            *holder = m;
            return f;
        }
        if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label == PROTOBUF_C_LABEL_REPEATED)
            return NULL;
        m = *(ProtobufCMessage *const *)((const char *)m + f->offset);
        p = dot + 1;
    }
}

const char *transcode_get_str(const ProtobufCMessage *m, const char *path)
{
    const ProtobufCMessage *h = NULL;
    const ProtobufCFieldDescriptor *f = resolve(m, path, &h);
    if (!f || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
        return "";
    const char *s = *(const char *const *)((const char *)h + f->offset);
    return s ? s : "";
}

static Google__Protobuf__FieldMask **mask_field(ProtobufCMessage *m)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, "update_mask");
    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE ||
        f->descriptor != &google__protobuf__field_mask__descriptor)
        return NULL;
    return (Google__Protobuf__FieldMask **)((char *)m + f->offset);
}

bool transcode_mask_has(const ProtobufCMessage *m, const char *path)
{
    Google__Protobuf__FieldMask **fm = mask_field((ProtobufCMessage *)m);
    if (!fm || !*fm)
        return false;
    for (size_t i = 0; i < (*fm)->n_paths; i++)
        if (strcmp((*fm)->paths[i], path) == 0)
            return true;
    return false;
}

/* Fields a client never updates through a mask (identity, concurrency token, output only). */
static bool mask_excluded(const char *f)
{
    static const char *const X[] = {"id",          "name",        "etag",    "create_time",
                                    "update_time", "delete_time", "builtin", NULL};
    for (int i = 0; X[i]; i++)
        if (strcmp(X[i], f) == 0)
            return true;
    return false;
}

static err_code infer_mask(ProtobufCMessage *m, const routes_route *r, const transcode_input *in,
                           arena *a, err_info *e)
{
    Google__Protobuf__FieldMask **fm = mask_field(m);
    if (!fm || (*fm && (*fm)->n_paths > 0))
        return ERR_OK;
    const ProtobufCFieldDescriptor *bf =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, r->body);
    if (!bf || bf->type != PROTOBUF_C_TYPE_MESSAGE)
        return ERR_OK;
    const char **present =
        in->body_len ? pbjson_present_fields(bf->descriptor, in->body, in->body_len, a) : NULL;
    Google__Protobuf__FieldMask *mask =
        (Google__Protobuf__FieldMask *)new_msg(a, &google__protobuf__field_mask__descriptor);
    size_t n = 0;
    for (size_t i = 0; present && present[i]; i++)
        n++;
    mask->paths = arena_alloc(a, (n + 1) * sizeof(char *));
    for (size_t i = 0; i < n; i++)
        if (!mask_excluded(present[i]))
            mask->paths[mask->n_paths++] = (char *)present[i];
    if (mask->n_paths == 0)
        return err_violation_add(e, "update_mask", "no updatable field in the request body");
    *fm = mask;
    return ERR_OK;
}

static bool has_star(const char *s)
{
    return s && strchr(s, '*') != NULL;
}

static err_code check_concrete(const ProtobufCMessage *m, err_info *e)
{
    const ProtobufCMessage *h = NULL;
    const ProtobufCFieldDescriptor *f = resolve(m, "permission", &h);
    if (f && f->type == PROTOBUF_C_TYPE_STRING && f->label != PROTOBUF_C_LABEL_REPEATED) {
        const char *p = transcode_get_str(m, "permission");
        if (!*p)
            err_violation_add(e, "permission", "is required");
        else if (has_star(p))
            err_violation_add(e, "permission", "must be concrete (no '*')");
    }
    f = resolve(m, "permissions", &h);
    if (f && f->type == PROTOBUF_C_TYPE_STRING && f->label == PROTOBUF_C_LABEL_REPEATED) {
        size_t n = *(const size_t *)((const char *)h + f->quantifier_offset);
        char *const *v = *(char *const *const *)((const char *)h + f->offset);
        if (n == 0)
            err_violation_add(e, "permissions", "at least one permission is required");
        for (size_t i = 0; i < n; i++)
            if (has_star(v[i]))
                err_violation_add(e, "permissions", "[%zu] must be concrete (no '*')", i);
    }
    return e->nviolations ? ERR_INVALID_ARGUMENT : ERR_OK;
}

static err_code set_path(ProtobufCMessage *m, const char *path, const char *v, arena *a,
                         err_info *e)
{
    err_info pe;
    err_clear(&pe);
    if (pbjson_set_path(m, path, v, a, &pe) == ERR_OK)
        return ERR_OK;
    if (pe.nviolations) {
        for (size_t i = 0; i < pe.nviolations; i++)
            err_violation_add(e, pe.violations[i].field, "%s", pe.violations[i].description);
        return ERR_INVALID_ARGUMENT;
    }
    return err_violation_add(e, path, "%s", pe.msg[0] ? pe.msg : "invalid value");
}

/* The proto field name of a query key (accepts lowerCamelCase). */
static const char *query_field(const ProtobufCMessageDescriptor *d, const char *key, arena *a)
{
    size_t n = strlen(key);
    char *snake = arena_alloc(a, 2 * n + 1);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        char c = key[i];
        if (c >= 'A' && c <= 'Z') {
            snake[j++] = '_';
            snake[j++] = (char)(c - 'A' + 'a');
        } else {
            snake[j++] = c;
        }
    }
    snake[j] = 0;
    char first[64];
    const char *dot = strchr(snake, '.');
    size_t fl = dot ? (size_t)(dot - snake) : j;
    if (fl >= sizeof first)
        return NULL;
    memcpy(first, snake, fl);
    first[fl] = 0;
    return protobuf_c_message_descriptor_get_field_by_name(d, first) ? snake : NULL;
}

err_code transcode_request(const routes_route *r, const routes_match *m, const transcode_input *in,
                           arena *a, ProtobufCMessage **out, err_info *e)
{
    ProtobufCMessage *msg = new_msg(a, r->req);
    bool body_all = r->body && strcmp(r->body, "*") == 0;

    /* 1. body */
    if (r->body && in->body_len > 0) {
        if (body_all) {
            if (pbjson_merge(msg, in->body, in->body_len, a, e) != ERR_OK)
                return e->code;
        } else {
            const ProtobufCFieldDescriptor *f =
                protobuf_c_message_descriptor_get_field_by_name(r->req, r->body);
            ProtobufCMessage *sub = NULL;
            if (!f || pbjson_decode(f->descriptor, in->body, in->body_len, a, &sub, e) != ERR_OK)
                return e->code ? e->code : err_set(e, ERR_INTERNAL, "bad body mapping");
            *(ProtobufCMessage **)((char *)msg + f->offset) = sub;
        }
    } else if (r->body && !body_all) {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(r->req, r->body);
        if (f)
            *(ProtobufCMessage **)((char *)msg + f->offset) = new_msg(a, f->descriptor);
    }

    /* 2. query parameters, for fields the body does not own; unknown keys are ignored */
    if (!body_all) {
        for (size_t i = 0; i < in->nquery; i++) {
            const char *f = query_field(r->req, in->query[i].key, a);
            if (!f || (r->body && strcmp(f, r->body) == 0))
                continue;
            if (set_path(msg, f, in->query[i].value ? in->query[i].value : "", a, e) != ERR_OK)
                return e->code;
        }
    }

    /* 3. path parameters */
    for (size_t i = 0; i < m->nparams; i++) {
        const routes_param *p = &m->params[i];
        char *field = arena_strndup(a, p->field, p->field_len);
        char *val = arena_strndup(a, p->value, p->value_len);
        if (p->kind == 'u' && strcmp(val, "me") == 0 && in->sub)
            val = arena_strdup(a, in->sub);
        else if ((p->kind == 'u' || p->kind == 'i') && !routes_is_uuid(val, strlen(val)))
            return err_violation_add(e, field, "must be a UUID");
        if (set_path(msg, field, val, a, e) != ERR_OK)
            return e->code;
    }

    /* 4. claims (always win) */
    if (r->inject && in->sub) {
        const char *p = r->inject;
        while (*p) {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            char *item = arena_strndup(a, p, n);
            char *eq = strchr(item, '=');
            if (eq) {
                *eq = 0;
                const char *src = eq + 1;
                const char *v = strcmp(src, "sub") == 0   ? in->sub
                                : strcmp(src, "sid") == 0 ? in->sid
                                : strcmp(src, "jti") == 0 ? in->jti
                                                          : NULL;
                if (v && set_path(msg, item, v, a, e) != ERR_OK)
                    return e->code;
            }
            p += n;
            if (*p == ',')
                p++;
        }
    }

    /* 5. route-specific fill-ins */
    if ((r->flags & RF_SELF_DEFAULT) && r->self && in->sub && !*transcode_get_str(msg, r->self))
        if (set_path(msg, r->self, in->sub, a, e) != ERR_OK)
            return e->code;
    if ((r->flags & RF_IF_MATCH) && r->etag && in->if_match && *in->if_match &&
        !*transcode_get_str(msg, r->etag))
        if (set_path(msg, r->etag, in->if_match, a, e) != ERR_OK)
            return e->code;
    if ((r->flags & RF_READ_COOKIE) && in->cookie_refresh &&
        !*transcode_get_str(msg, "refresh_token"))
        if (set_path(msg, "refresh_token", in->cookie_refresh, a, e) != ERR_OK)
            return e->code;
    if ((r->flags & RF_INFER_MASK) && r->body && !body_all &&
        infer_mask(msg, r, in, a, e) != ERR_OK)
        return e->code;
    if ((r->flags & RF_CONCRETE_PERM) && check_concrete(msg, e) != ERR_OK)
        return e->code;
    /* A self-or-permission user id that is not a UUID would only reach the service to fail. */
    if ((r->flags & RF_SELF_DEFAULT) && r->self) {
        const char *id = transcode_get_str(msg, r->self);
        if (!routes_is_uuid(id, strlen(id)))
            return err_violation_add(e, r->self, "must be a UUID");
    }
    *out = msg;
    return ERR_OK;
}
