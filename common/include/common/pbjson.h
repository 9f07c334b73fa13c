/* pbjson: proto3 JSON mapping ↔ protobuf-c messages, driven only by descriptors (no generated
 * code). */
#ifndef COMMON_PBJSON_H
#define COMMON_PBJSON_H

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "common/err.h"
#include "common/mem.h"

/* Output choices follow grpc-gateway v2's default marshaler: proto field names, every field emitted
 * (EmitUnpopulated: scalars with their zero value, repeated as [], unset messages as null), enums
 * by name, 64-bit integers as strings, Timestamp as RFC 3339 UTC ("2026-11-22T06:43:03.123Z"),
 * Duration as "1.500s" (0, 3, 6 or 9 fractional digits, like Timestamp), FieldMask as "a,b" (paths
 * in lowerCamelCase), Empty as {}, Any as {"@type": url, ...fields} for the types
 * pbjson_register_any knows (google.rpc.BadRequest, google.rpc.RetryInfo, google.rpc.Status and the
 * well-known types built in; a well-known type in Any is {"@type": url, "value": <its JSON>}; an
 * unknown type is {"@type": url, "value": "<base64 bytes>"}). Maps (protoc's <Field>Entry types)
 * are JSON objects. Never fails: invalid UTF-8 in strings becomes U+FFFD, out-of-range Timestamps
 * are clamped to 0001..9999. */
typedef struct pbjson_opts {
    bool omit_unpopulated; /* true: proto3 default (skip zero values); default false */
} pbjson_opts;

/* Encodes m as JSON text allocated in a (NUL-terminated); *len gets its length (may be NULL). */
char *pbjson_encode(const ProtobufCMessage *m, const pbjson_opts *o, arena *a, size_t *len);

/* Decodes JSON text into a new message of type d, allocated in a. Accepts proto names and
 * lowerCamelCase; enums by name or number; 64-bit ints as strings or numbers; Timestamp RFC 3339;
 * FieldMask "a,b"; null = unset; unknown fields ignored. Wrong types, overflow, invalid UTF-8,
 * duplicate keys, non-object top level, nesting deeper than 32 → ERR_INVALID_ARGUMENT with a field
 * violation naming the JSON path ("user.status", "roles[2]", "details[0].@type"), never a crash;
 * problems with the document as a whole (malformed JSON, invalid UTF-8, duplicate keys, not an
 * object, too deep) have the field "body". Every bad field is reported (up to ERR_MAX_VIOLATIONS).
 * Unknown enum names are rejected (numbers are accepted: proto3 enums are open). uint64 values
 * above 2^63-1 must be strings (jansson refuses larger JSON integers). len may be 0 for an empty
 * body (= empty message). On error *out is NULL. */
err_code pbjson_decode(const ProtobufCMessageDescriptor *d, const char *json, size_t len, arena *a,
                       ProtobufCMessage **out, err_info *e);

/* Same, into an existing message: fields present in json overwrite m's (repeated fields are
 * replaced, sub-messages merged); null leaves a field alone. */
err_code pbjson_merge(ProtobufCMessage *m, const char *json, size_t len, arena *a, err_info *e);

/* Sets the field at a dotted path ("user.id", "page_size", "ids" appends for repeated) from its
 * text form, as grpc-gateway does for path and query parameters. Creates intermediate messages.
 * Accepts proto or lowerCamelCase names; bool "true"/"false" (also 1/0, t/f); enum names or
 * numbers; Timestamp, Duration, FieldMask in their JSON string forms. Unknown path, a message or
 * map target, or a bad value → ERR_INVALID_ARGUMENT with a violation on `path`; the field keeps
 * its value (intermediate messages may have been created). */
err_code pbjson_set_path(ProtobufCMessage *m, const char *path, const char *text, arena *a,
                         err_info *e);

/* The top-level keys present in a JSON object, normalised to proto field names of d (for PATCH:
 * the update mask is the fields present in the body). Returns a NULL-terminated array in a, or NULL
 * when json is not an object. */
const char **pbjson_present_fields(const ProtobufCMessageDescriptor *d, const char *json,
                                   size_t len, arena *a);

/* lowerCamelCase of a proto field name ("display_name" → "displayName"), in a. */
char *pbjson_camel(const char *proto_name, arena *a);

/* Registers a message type for Any (type URL "type.googleapis.com/<full name>"). Call at start-up
 * before threads run; the built-ins need no registration. */
void pbjson_register_any(const ProtobufCMessageDescriptor *d);

#endif
