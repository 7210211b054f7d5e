/*
 * rule_check.h - the bound on what a rule's regexes cost to compile. Hyperscan takes minutes over some short
 * regexes ("(?:ab|cd|ef).{0,600}gh.{0,600}ij" ~160 s, "\w{300}", "(.*a){50}"), and a rule's compile runs where
 * the server waits for it (a rule change, every start). So each regex of a rule is first compiled alone in a
 * helper process under a CPU and a memory limit; one over it is refused, naming the rule and the regex, in
 * seconds, and only rules that passed are compiled into the set in force (rules.h).
 *
 * Contract:
 *   - rule_check: every regex of every rule given is compiled alone, with the flags of the set, in the order
 *     given, by one helper process (a second one after a regex that ended the first); each rule's result says
 *     ok with the CPU seconds its regexes took (each alone, summed: what they add to the set's compile), or
 *     why not: Hyperscan's reason, or "too costly to compile (over 2 s)" when one regex took over
 *     RULE_CHECK_CPU_S seconds of CPU, RULE_CHECK_WALL_S seconds of wall time, or more memory than
 *     RULE_CHECK_MEMORY. A rule without regexes starts no helper (phrases are bounded by their count:
 *     RULE_SET_EXPRS_MAX). Errors (MS_EIO) only when the helper cannot be run or answers nonsense.
 *   - the set's budget: the rules in force, together, at most RULE_CHECK_SET_CPU_S seconds of their checked
 *     regexes' CPU (the notifier refuses a change that adds to a set over it).
 *   - rule_check_serve is the helper's side (`medstream rules-check`, dispatched by main.c before its command
 *     table: not a command anyone types): it limits itself, then answers each regex it reads until EOF.
 *
 * DESIGN: why a process. Hyperscan has no bound of its own on a compile: hs_expr_ext's fields (min/max offset,
 * min length, edit and Hamming distance) bound what matches, not the compile; hs_expression_info parses and
 * reports widths, not a cost (a 1-KiB regex of cheap syntax can take minutes); HS_FLAG_PREFILTER compiles an
 * approximation, which would change what matches. And a compile cannot be stopped inside a thread. A process can
 * be: setrlimit(RLIMIT_CPU) ends it (SIGXCPU) after S s of its own CPU, whatever the load of the machine, and
 * RLIMIT_AS makes an allocation over the limit fail (Hyperscan then answers "Unable to allocate memory").
 *
 * Why it is sound in a threaded server: the helper is not a fork() of the server running Hyperscan (its child
 * would inherit malloc's and Hyperscan's locks as other threads held them at the fork, and a compile allocates:
 * a deadlock waiting to happen) but this same program started afresh: posix_spawn of /proc/self/exe (the
 * running binary, even if the file was replaced since) with `rules-check`. glibc's posix_spawn runs, between
 * its clone(CLONE_VM | CLONE_VFORK) and the execve, only its own async-signal-safe steps (the signal mask and
 * dispositions reset, the dup2 of a socket onto stdin and stdout, closing every other descriptor, so no
 * listening socket or client connection of the server lives on in the helper); the helper then starts as a
 * one-thread process, sets its own limits and never shares memory with the server. Regexes go over a
 * socketpair one at a time (a 4-byte little-endian length, the bytes) and each answer is one line ("ok
 * MICROSECONDS" or "no REASON"), so neither side can fill the other's buffer while it waits. The parent adds a
 * wall-clock deadline and kills the helper (by its pid) when it passes; the helper's own CPU limit is re-armed
 * before each regex (soft limit = CPU used so far + S, rounded up), and its SIGXCPU handler only calls _exit.
 * The sanitizer build (ASan reserves terabytes of address space for its shadow) sets no RLIMIT_AS.
 *
 * What it must never do: compile a regex in the server's own process before it passed here (the set compile
 * does, after), leave a helper running or unreaped, or see a record's text (it sees rules only).
 */
#ifndef MS_NOTIFY_RULE_CHECK_H
#define MS_NOTIFY_RULE_CHECK_H

#include "notify/rules.h"

#include <stdbool.h>
#include <stddef.h>

#define RULE_CHECK_CPU_S 2                         /* CPU seconds one regex may take to compile alone */
#define RULE_CHECK_WALL_S 30                       /* wall seconds the parent waits for one regex's answer */
#define RULE_CHECK_MEMORY ((unsigned long)1 << 30) /* the helper's address space, bytes */
#define RULE_CHECK_SET_CPU_S 20.0                  /* the rules in force: their regexes' checked CPU, summed */
#define RULE_CHECK_COMMAND "rules-check"           /* the helper's hidden subcommand (main.c) */

typedef struct {
    bool ok;       /* every regex of the rule compiled alone within the bounds (a rule without regexes: ok) */
    double cpu_s;  /* ok: the CPU seconds they took, summed */
    char why[600]; /* not ok: "rule \"NAME\": regex N: REASON" */
} rule_check_result;

/* Check the regexes of rules[0..n), out[i] for rules[i]. program: the medstream binary that answers
 * RULE_CHECK_COMMAND (NULL: this program, /proc/self/exe). MS_OK when every rule was checked, whatever the
 * results; MS_EIO when the helper cannot be started or fails other than by a regex's cost. */
ms_code rule_check(const char *program, const rule_def *const *rules, size_t n, rule_check_result *out, ms_err *e);

/* The helper: with limits, its own RLIMIT_AS and RLIMIT_CORE set, and before each regex its CPU limit; then
 * each regex read from in is answered on out, until EOF (MS_OK). Without limits (the unit tests, in their own
 * process) it only answers. MS_EIO on a broken frame or a failed read or write. */
ms_code rule_check_serve(int in, int out, bool limits, ms_err *e);

#endif
