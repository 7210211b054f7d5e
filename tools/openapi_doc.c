/*
 * openapi_doc.c - writes the API's OpenAPI 3.1 document (src/api/openapi.c, from the route table) to
 * standard output: `make openapi` runs it to regenerate docs/openapi.json, the copy an end-to-end test
 * compares with what the server serves at GET /v1/openapi.json.
 *
 * What it must never do: open a data directory or the network; it reads nothing but the table.
 */
#include "api/openapi.h"

#include <stdio.h>

int main(void)
{
    buf doc = {0};
    openapi_write(&doc);
    int ok = fwrite(doc.data, 1, doc.len, stdout) == doc.len && fflush(stdout) == 0;
    buf_free(&doc);
    if (!ok) perror("openapi_doc: stdout");
    return ok ? 0 : 1;
}
