/* openapi: walks the route table and, through the request/response descriptors, every message a
 * route touches, so the published schema cannot drift from what the gateway really does. */
#include "openapi.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "common/mem.h"
#include "routes.h"

static const char *wkt(const ProtobufCMessageDescriptor *d)
{
    if (strcmp(d->name, "google.protobuf.Timestamp") == 0)
        return "date-time";
    if (strcmp(d->name, "google.protobuf.FieldMask") == 0)
        return "field-mask";
    if (strcmp(d->name, "google.protobuf.Duration") == 0)
        return "duration";
    return NULL;
}

static void add_message(json_t *schemas, const ProtobufCMessageDescriptor *d);

static json_t *field_schema(json_t *schemas, const ProtobufCFieldDescriptor *f)
{
    json_t *s = json_object();
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        json_object_set_new(s, "type", json_string("integer"));
        json_object_set_new(s, "format", json_string("int32"));
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        json_object_set_new(s, "type", json_string("string"));
        json_object_set_new(s, "format", json_string("int64"));
        break;
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        json_object_set_new(s, "type", json_string("number"));
        break;
    case PROTOBUF_C_TYPE_BOOL:
        json_object_set_new(s, "type", json_string("boolean"));
        break;
    case PROTOBUF_C_TYPE_STRING:
        json_object_set_new(s, "type", json_string("string"));
        break;
    case PROTOBUF_C_TYPE_BYTES:
        json_object_set_new(s, "type", json_string("string"));
        json_object_set_new(s, "format", json_string("byte"));
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        json_t *vals = json_array();
        for (unsigned i = 0; i < ed->n_values; i++)
            json_array_append_new(vals, json_string(ed->values[i].name));
        json_object_set_new(s, "type", json_string("string"));
        json_object_set_new(s, "enum", vals);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessageDescriptor *md = f->descriptor;
        const char *w = wkt(md);
        if (w) {
            json_object_set_new(s, "type", json_string("string"));
            json_object_set_new(s, "format", json_string(w));
        } else {
            char ref[256];
            snprintf(ref, sizeof ref, "#/components/schemas/%s", md->name);
            json_object_set_new(s, "$ref", json_string(ref));
            add_message(schemas, md);
        }
        break;
    }
    }
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        json_t *arr = json_object();
        json_object_set_new(arr, "type", json_string("array"));
        json_object_set_new(arr, "items", s);
        return arr;
    }
    return s;
}

static void add_message(json_t *schemas, const ProtobufCMessageDescriptor *d)
{
    if (json_object_get(schemas, d->name))
        return;
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string("object"));
    json_object_set(schemas, d->name, o); /* placeholder first: recursive types terminate */
    json_t *props = json_object();
    for (unsigned i = 0; i < d->n_fields; i++)
        json_object_set_new(props, d->fields[i].name, field_schema(schemas, &d->fields[i]));
    json_object_set_new(o, "properties", props);
    json_decref(o);
}

static json_t *ref(const char *name)
{
    char r[256];
    snprintf(r, sizeof r, "#/components/schemas/%s", name);
    return json_pack("{s:s}", "$ref", r);
}

static json_t *json_content(json_t *schema)
{
    return json_pack("{s:{s:{s:o}}}", "content", "application/json", "schema", schema);
}

static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

/* "/v1/users/{user.id:user}" → "/v1/users/{id}", and the parameter list. The parameter is named
 * by the last part of its field path so that GET /v1/users/{id} and PATCH (bound to user.id) share
 * one path item: OpenAPI forbids two templated paths that differ only in parameter names. */
static void openapi_path(const char *t, char *out, size_t len, json_t *params)
{
    size_t n = 0;
    while (*t && n + 1 < len) {
        if (*t == '{') {
            const char *end = strchr(t, '}');
            const char *colon = memchr(t, ':', (size_t)(end - t));
            size_t nl = (size_t)((colon ? colon : end) - t - 1);
            char name[64];
            snprintf(name, sizeof name, "%.*s", (int)nl, t + 1);
            char *dot = strrchr(name, '.');
            if (dot)
                memmove(name, dot + 1, strlen(dot + 1) + 1);
            n += (size_t)snprintf(out + n, len - n, "{%s}", name);
            json_t *schema = json_pack("{s:s}", "type", "string");
            if (colon && strncmp(colon + 1, "uuid", 4) == 0)
                json_object_set_new(schema, "format", json_string("uuid"));
            if (colon && strncmp(colon + 1, "user", 4) == 0)
                json_object_set_new(schema, "description",
                                    json_string("user id (UUID) or `me` for the caller"));
            json_array_append_new(params, json_pack("{s:s,s:s,s:b,s:o}", "name", name, "in", "path",
                                                    "required", 1, "schema", schema));
            t = end + 1;
        } else {
            out[n++] = *t++;
        }
    }
    out[n] = 0;
}

static void error_responses(json_t *responses, const routes_route *r)
{
    json_t *err = json_content(ref("Error"));
    json_object_set_new(err, "description", json_string("error (gRPC status mapped to HTTP)"));
    json_object_set_new(responses, "default", err);
    (void)r;
}

char *openapi_build(size_t *len)
{
    json_t *schemas = json_object();
    json_object_set_new(schemas, "Error",
                        json_pack("{s:s,s:{s:{s:s,s:s},s:{s:s},s:{s:s},s:{s:s,s:{s:s}},s:{s:s}}}",
                                  "type", "object", "properties", "code", "type", "integer",
                                  "format", "int32", "status", "type", "string", "message", "type",
                                  "string", "details", "type", "array", "items", "type", "object",
                                  "request_id", "type", "string"));
    json_t *paths = json_object();
    size_t n;
    const routes_route *rt = routes_table(&n);
    for (size_t i = 0; i < n; i++) {
        const routes_route *r = &rt[i];
        json_t *params = json_array();
        char path[256];
        openapi_path(r->path, path, sizeof path, params);
        json_t *item = json_object_get(paths, path);
        if (!item) {
            item = json_object();
            json_object_set_new(paths, path, item);
        }
        json_t *op = json_object();
        json_object_set_new(op, "operationId", json_string(r->op));
        const char *tag = r->svc == SVC_AUTH         ? "auth"
                          : r->svc == SVC_USER       ? "users"
                          : r->svc == SVC_PERMISSION ? "permissions"
                                                     : "operations";
        json_object_set_new(op, "tags", json_pack("[s]", tag));
        char summary[256];
        if (r->rpc)
            snprintf(summary, sizeof summary, "%s%s%s", r->rpc + 1,
                     r->perm ? (r->rule == RULE_SELF_OR_PERM ? " — self or " : " — requires ") : "",
                     r->perm ? r->perm : "");
        else
            snprintf(summary, sizeof summary, "%s (served by the gateway)", r->op);
        json_object_set_new(op, "summary", json_string(summary));
        if (r->req && !r->body) {
            /* Scalar fields not bound by the path or claims are query parameters. */
            for (unsigned f = 0; f < r->req->n_fields; f++) {
                const ProtobufCFieldDescriptor *fd = &r->req->fields[f];
                if (fd->type == PROTOBUF_C_TYPE_MESSAGE || strstr(r->path, fd->name) ||
                    (r->inject && strstr(r->inject, fd->name)))
                    continue;
                json_t *sch = json_object();
                json_t *fs = field_schema(schemas, fd);
                json_object_update(sch, fs);
                json_decref(fs);
                json_array_append_new(params, json_pack("{s:s,s:s,s:b,s:o}", "name", fd->name, "in",
                                                        "query", "required", 0, "schema", sch));
            }
        }
        if (json_array_size(params))
            json_object_set_new(op, "parameters", params);
        else
            json_decref(params);
        if (r->req && r->body) {
            const ProtobufCMessageDescriptor *bd = r->req;
            if (strcmp(r->body, "*") != 0) {
                const ProtobufCFieldDescriptor *bf =
                    protobuf_c_message_descriptor_get_field_by_name(r->req, r->body);
                if (bf)
                    bd = bf->descriptor;
            }
            add_message(schemas, bd);
            json_t *rb = json_content(ref(bd->name));
            json_object_set_new(rb, "required", json_false());
            json_object_set_new(op, "requestBody", rb);
        }
        json_t *responses = json_object();
        char code[8];
        snprintf(code, sizeof code, "%d", r->status);
        if (r->resp && r->status != 204) {
            add_message(schemas, r->resp);
            json_t *ok = json_content(ref(r->resp->name));
            json_object_set_new(ok, "description", json_string("success"));
            json_object_set_new(responses, code, ok);
        } else if (r->local == LOCAL_METRICS) {
            json_object_set_new(responses, code,
                                json_pack("{s:s,s:{s:{s:{s:s}}}}", "description",
                                          "Prometheus text format", "content", "text/plain",
                                          "schema", "type", "string"));
        } else if (r->local != LOCAL_NONE) {
            json_object_set_new(responses, code,
                                json_pack("{s:s,s:{s:{s:{s:s}}}}", "description", "JSON", "content",
                                          "application/json", "schema", "type", "object"));
        } else {
            json_object_set_new(responses, code, json_pack("{s:s}", "description", "no content"));
        }
        error_responses(responses, r);
        json_object_set_new(op, "responses", responses);
        if (r->auth == AUTH_SIGNED_IN)
            json_object_set_new(op, "security", json_pack("[{s:[]}]", "bearerAuth"));
        else
            json_object_set_new(op, "security", json_array());
        char m[16];
        snprintf(m, sizeof m, "%s", r->method);
        lower(m);
        json_object_set_new(item, m, op);
    }
    json_t *doc = json_pack(
        "{s:s,s:{s:s,s:s,s:s},s:o,s:{s:o,s:{s:{s:s,s:s,s:s}}}}", "openapi", "3.0.3", "info",
        "title", "identity gateway", "version", "1.0.0", "description",
        "HTTP/JSON API of the identity backend (auth, users, permissions). JSON names are proto "
        "field names; input also accepts lowerCamelCase.",
        "paths", paths, "components", "schemas", schemas, "securitySchemes", "bearerAuth", "type",
        "http", "scheme", "bearer", "bearerFormat", "JWT");
    char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(doc);
    char *out = xstrdup(text ? text : "{}");
    free(text);
    *len = strlen(out);
    return out;
}
