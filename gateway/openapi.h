/* openapi: the OpenAPI 3.0 document, generated from the route table and the message descriptors. */
#ifndef GATEWAY_OPENAPI_H
#define GATEWAY_OPENAPI_H

#include <stddef.h>

/* The document as JSON (malloc'ed; caller frees). */
char *openapi_build(size_t *len);

#endif
