/*
 * checkpoint.h - where an import of a file stands, and the two places it is kept: in the store, in the
 * same commit as the batch it follows (the offline importer: source positions, store.h), or in a file
 * beside the input, rewritten after each batch the server acknowledged (--url: the server has no API
 * for an importer's position yet).
 *
 * A position names the file by its identity (input.h) and says where the next row starts (stream byte
 * offset and physical line), how many rows were read and rejected before it (over every run of this
 * pass over the file, for --max-rejects), how long the rejects file was then, whether the whole file is
 * done, and up to where rows after it may have been stored already (replay_until: the rest of a file
 * imported before and now read again, or --url batches sent whose answers the checkpoint does not count):
 * a rerun sends those as a replay (writer.h, ingest_job.replay). In the store it is the source
 * "import:<identity hex>" with one partition per value (0 offset, 1 line, 2 rows, 3 rejected, 4 rejects
 * file bytes, 5 done, 6 replay_until); in a file it is one JSON object.
 *
 * Contract: pure but for checkpoint_file_load/save (a small file each). A checkpoint file that does not
 * parse, or names another file or server, is "not found" with a reason the caller shows: starting over
 * is safe, since every row is then a duplicate of itself.
 *
 * What it must never do: hold anything of the rows (positions and counts only), or leave a half-written
 * checkpoint file (it is written beside and renamed over the old one).
 */
#ifndef MS_IMPORT_CHECKPOINT_H
#define MS_IMPORT_CHECKPOINT_H

#include "ingest/writer.h"

typedef struct {
    uint64_t offset, line;   /* where the next row starts: stream byte offset, physical line (1-based) */
    uint64_t rows, rejected; /* rows read and rows rejected before it, this pass over the file */
    uint64_t rejects_bytes;  /* the rejects file's length at that point */
    bool done;               /* every row of the file was imported */
    uint64_t replay_until;   /* rows starting before this stream offset may have been stored already */
} import_position;

#define IMPORT_REPLAY_ALL ((uint64_t)INT64_MAX) /* replay_until of a file read again from its start */
#define IMPORT_POSITION_START ((import_position){.line = 1})
#define IMPORT_POSITION_PARTS 7
#define IMPORT_SOURCE_MAX 80

/* The store's source name of a file: "import:" and the identity's 64 hex digits. */
void import_source_name(const unsigned char identity[32], char out[IMPORT_SOURCE_MAX]);

/* The position as the source positions of a batch (out has IMPORT_POSITION_PARTS entries pointing at
 * source, which must outlive them). */
void import_position_offsets(const import_position *p, const char *source, source_offset *out);
/* Back from the stored partitions (found[i] false: that one was never stored; replay_until may be
 * missing). false if they do not make a position (none stored: *p is the start). */
bool import_position_from_parts(const int64_t parts[IMPORT_POSITION_PARTS], const bool found[IMPORT_POSITION_PARTS],
                                import_position *p);

/* The checkpoint file of --url: {"identity","url","offset","line","rows","rejected","rejects_bytes","done",
 * "replay_until"} (written after each batch is counted, and before a batch is sent past replay_until).
 * load: *found false (why says why, for the user) when the file is missing, does not parse, or names
 * another identity or url. Errors: MS_EIO a file that exists but cannot be read. */
ms_code checkpoint_file_load(const char *path, const unsigned char identity[32], const char *url, import_position *p,
                             bool *found, char *why, size_t why_cap, ms_err *e);
/* Write it durably: a temporary file beside it (mode 0600), fdatasync'd, renamed over it. */
ms_code checkpoint_file_save(const char *path, const unsigned char identity[32], const char *url,
                             const import_position *p, ms_err *e);

#endif
