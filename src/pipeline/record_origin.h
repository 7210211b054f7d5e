/*
 * record_origin.h - where a record sent through Kafka by `medstream import --kafka` comes from: the file
 * (its 32-byte identity, the importer's input.h) and the physical line its row starts on, carried as two
 * message headers, so that a Kafka ingest names a row without a record id exactly as the offline
 * importer and --url do (record_scan.h, scan_config.origin and origin_line: the keyed hash of file and
 * line), and a row sent again after a crash is the same record, a duplicate. A third header marks a row
 * an importer sends again after a crash (it may have been stored already): a record whose versions
 * include its content is then a duplicate of that version, not a new one (ingest_job.replay), so a file
 * holding several versions of a record stores none of them twice. Two more carry what a record had in the
 * store that seeded a cluster (`medstream cluster-seed`, ingest/cluster_seed.h): its record id and its
 * event time there, for a body that names neither, so it is the same record at the same instant.
 *
 * Contract: pure functions over buffers. The headers hold no value of the record (a hash of the file's
 * first MiB, its size and path, and a line number).
 *
 * What it must never do: accept a malformed pair (a wrong length, a line that is not plain decimal): the
 * message is then named by its content, as any other Kafka message is.
 */
#ifndef MS_RECORD_ORIGIN_H
#define MS_RECORD_ORIGIN_H

#include "pipeline/record_scan.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RECORD_ORIGIN_HEADER "medstream-origin" /* 32 bytes: the file's identity */
#define RECORD_LINE_HEADER "medstream-line"     /* decimal: the physical line the row starts on, 1.. */
#define RECORD_REPLAY_HEADER "medstream-replay" /* "1": the row may have been sent before (ingest_job.replay) */
#define RECORD_ID_HEADER "medstream-record-id"  /* a seeded record's id (when its body names none) */
#define RECORD_TS_HEADER "medstream-ts"         /* its event time there: be64 microseconds */
#define RECORD_LINE_TEXT 21                     /* a line's decimal text with its NUL */
#define RECORD_LINE_MAX ((uint64_t)1 << 62)     /* as import_line over HTTP */

/* The line header's text of a physical line; returns its length. */
int record_origin_line_format(uint64_t line, char out[RECORD_LINE_TEXT]);

/* The two headers' values as a message carries them: true (and *line) when origin is 32 bytes and
 * line_text is 1 to 19 decimal digits naming a line from 1 to RECORD_LINE_MAX. */
bool record_origin_parse(const void *origin, size_t origin_len, const void *line_text, size_t line_len, uint64_t *line);

/* The replay header's value: exactly "1". */
bool record_origin_replay(const void *value, size_t len);

/* cfg names the record at body line body_line (1-based, as record_prepare_one is given it) by origin and
 * its file line. */
void record_origin_apply(scan_config *cfg, const unsigned char *origin, uint64_t file_line, uint32_t body_line);

#endif
