/*
 * record_origin.c - the file-and-line headers of an imported Kafka message (see record_origin.h).
 */
#include "pipeline/record_origin.h"

#include <stdio.h>

int record_origin_line_format(uint64_t line, char out[RECORD_LINE_TEXT])
{
    return snprintf(out, RECORD_LINE_TEXT, "%llu", (unsigned long long)line);
}

bool record_origin_parse(const void *origin, size_t origin_len, const void *line_text, size_t line_len, uint64_t *line)
{
    if (!origin || origin_len != 32 || !line_text || line_len == 0 || line_len > 19) return false;
    const char *s = line_text;
    uint64_t n = 0;
    for (size_t i = 0; i < line_len; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        n = n * 10 + (uint64_t)(s[i] - '0'); /* 19 digits fit in 64 bits */
    }
    if (n == 0 || n > RECORD_LINE_MAX) return false;
    *line = n;
    return true;
}

bool record_origin_replay(const void *value, size_t len) { return value && len == 1 && *(const char *)value == '1'; }

void record_origin_apply(scan_config *cfg, const unsigned char *origin, uint64_t file_line, uint32_t body_line)
{
    cfg->origin = origin;
    cfg->origin_line = file_line - (body_line - 1); /* record_scan: origin_line + body_line - 1 is the file's line;
                                                       unsigned, so exact even below body_line */
}
