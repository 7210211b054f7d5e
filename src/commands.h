/*
 * commands.h - what the command line's files share: main.c (the command table, init, user, roles,
 * audit, backup, the tools), cmd_serve.c, cmd_import.c, cmd_export.c and cmd_erase.c. Each command parses its own
 * option table (base/options.h) and returns an exit code: 0 ok, 1 runtime failure, 2 usage.
 *
 * Never used below the command line: the layers (the folders of src/) know nothing of processes, signals or exit
 * codes.
 */
#ifndef MS_COMMANDS_H
#define MS_COMMANDS_H

#include "base/util.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#define VERSION "0.1.0"

/* "medstream CMD: MSG (see medstream CMD --help)" on standard error; returns 2. */
int usage_error(const char *cmd, const char *msg);
/* Is dir a directory `medstream init` made? If not, says so (naming cmd) and answers false. */
bool data_dir_ready(const char *cmd, const char *dir);
/* A command run without --schema (serve, import --data, export --data) takes the default schema. True if that
 * is the store's own: its public copies are under the default schema (the version in force, or the one being
 * re-projected to), or it has none recorded. Else says so on stderr (naming cmd, the version and what the
 * default would have done: `consequence`) and answers false: serve or an import would register the default as
 * a changed schema and re-project every public copy under it, publishing what the operator's allow-list keeps
 * private. */
typedef struct store store;
bool store_schema_is_default(store *s, const char *cmd, const char *consequence);
/* The OS user as an audit actor: "local:NAME" (or "local:uid N"). */
void local_actor(char *out, size_t cap);

/* A long command that stops cleanly: after stop_on_signals, the first SIGINT, SIGTERM or SIGHUP sets command_stop
 * (the command stops at its next safe point); a second one ends the process at once (the handler is
 * reset after the first). SIGPIPE is ignored (a closed connection is an error value) and so is SIGXFSZ (a
 * file-size limit is a full disk: EFBIG, an error like ENOSPC). */
extern atomic_bool command_stop;
void stop_on_signals(void);

/* The role table in force: the default, or a role file's (access.h); false (said on stderr, naming cmd)
 * when the file is bad. */
bool load_roles(const char *path, const char *cmd);
/* A whole (small) text file, NUL-terminated (free it); NULL with *e set if it cannot be read. */
char *read_text_file(const char *path, ms_err *e);
/* NULL if url is an http:// or https:// URL the client can use; else "--url: why" (a static buffer: the
 * command-line checks of import and export, one thread). */
const char *url_option_check(const char *url);

int cmd_serve(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_erase(int argc, char **argv);
int cmd_cluster_seed(int argc, char **argv);

#endif
