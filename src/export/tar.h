/*
 * tar.h - the archive of GET /v1/exports/{id}/download: POSIX ustar, uncompressed (Parquet is
 * compressed already; every tar reads it), of an export directory; and its extraction by `medstream
 * export --url`.
 *
 * Contract: tar_write_dir archives every directory and regular file under dir (names relative to it,
 * sorted, so the same export gives the same archive bar its mtimes), written through out_file (temporary
 * name, fsync, rename). tar_extract refuses (MS_EINVAL) a member whose name is absolute, has an empty,
 * "." or ".." component, or is not a file or a directory, before writing it; files are written through
 * out_file too. Members larger than 8 GiB are refused on both sides (ustar's size field).
 */
#ifndef MS_EXPORT_TAR_H
#define MS_EXPORT_TAR_H

#include "base/util.h"

ms_code tar_write_dir(const char *dir, const char *tar_dir, const char *tar_name, ms_err *e);
ms_code tar_extract(const char *data, size_t len, const char *dir, ms_err *e);

#endif
