/*
 * prepare.h - the pure stages of the pipeline in their order, for a source to call as one step:
 *
 *   1 scan      (record_scan.h)  structure, UTF-8, numbers, the record-level roles (id, type, ts),
 *                                content hash; a bad record is a rejected line
 *   2 identity  (identity.h)     name normalized + date of birth -> the identity key
 *   3 public    (deidentify.h)   the allow-listed, transformed public copy of the record
 *
 * A record rejected at one stage skips the next ones; the others go on. Each stage knows only the one
 * before it (its parsed_record); none does I/O.
 *
 * Contract: pure; the parsed records point into the caller's body buffer (which must outlive the batch).
 */
#ifndef MS_PREPARE_H
#define MS_PREPARE_H

#include "pipeline/csv.h"
#include "pipeline/record_scan.h"

/* Stages 1-3 over a whole request body (NDJSON, a JSON array or one object). MS_EINVAL only for a body
 * with no records at all; every other problem is a rejected line. */
ms_code record_prepare_body(const scan_config *cfg, const char *body, size_t len, record_batch *out, ms_err *e);

/* Stages 1-3 over one record's text (one Kafka message, one imported row). */
void record_prepare_one(const scan_config *cfg, const char *text, size_t len, uint32_t line, arena *mem,
                        parsed_record *out);

/* Stages 1-3 over the rows of a CSV batch (csv.h), appended to out in their order, one record per row:
 * out->records[k + i] is rows->rows[i] (k: out->n before the call). A valid row's object is prepared as
 * one record whose line is the row's physical line (UINT32_MAX past that); a row the CSV stage rejected
 * is a rejected record whose error is csv_row_message's text. The records point into rows->json, which
 * must outlive out (and is the body a source stores). */
void record_prepare_csv(const scan_config *cfg, const csv_header *h, const csv_batch *rows, record_batch *out);

#endif
