/*
 * test_fd_io.c - whole reads and writes: at an offset and at the file's offset, a read across many short
 * reads of a pipe and through a signal that interrupts it (EINTR), a read that meets the file's end, a
 * write to a full device (ENOSPC, nothing written) and to a closed descriptor (EBADF).
 */
#include "unit.h"

#include "base/fd_io.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

static void test_at_an_offset_and_at_the_files_offset(void **state)
{
    (void)state;
    char dir[64];
    unit_tmpdir(dir);
    char path[128];
    snprintf(path, sizeof path, "%s/f", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    size_t done = 99;
    assert_int_equal(ms_write_full(fd, "hello ", 6, -1, &done), 0);
    assert_int_equal(done, 6);
    assert_int_equal(ms_write_full(fd, "world", 5, -1, NULL), 0);
    assert_int_equal(ms_write_full(fd, "W", 1, 6, NULL), 0); /* at offset 6; the file's offset stays at 11 */
    assert_int_equal(lseek(fd, 0, SEEK_CUR), 11);
    char b[32] = {0};
    size_t got = 99;
    assert_int_equal(ms_read_full(fd, b, 11, 0, &got), 0);
    assert_int_equal(got, 11);
    assert_memory_equal(b, "hello World", 11);
    assert_int_equal(ms_read_full(fd, b, sizeof b, 4, &got), 0); /* the file ends first: fewer, no error */
    assert_int_equal(got, 7);
    assert_memory_equal(b, "o World", 7);
    assert_int_equal(ms_read_full(fd, b, sizeof b, -1, &got), 0); /* at the file's offset: its end */
    assert_int_equal(got, 0);
    close(fd);
    unit_rmtree(dir);
}

static void test_a_full_device_and_a_bad_descriptor(void **state)
{
    (void)state;
    int fd = open("/dev/full", O_WRONLY);
    if (fd < 0) skip();
    size_t done = 99;
    assert_int_equal(ms_write_full(fd, "x", 1, -1, &done), ENOSPC);
    assert_int_equal(done, 0);
    close(fd);
    int p[2];
    assert_int_equal(pipe(p), 0);
    close(p[0]);
    close(p[1]);
    assert_int_equal(ms_write_full(p[1], "x", 1, -1, &done), EBADF);
    size_t got = 99;
    char c;
    assert_int_equal(ms_read_full(p[0], &c, 1, -1, &got), EBADF);
    assert_int_equal(got, 0);
}

/* The writer sends 3 pieces of a pipe's message, apart in time, so the reader's read returns short
 * each time, and a timer's signal (no SA_RESTART) interrupts it while it waits. */
static int pipe_w;
static void *slow_writer(void *arg)
{
    (void)arg;
    const char *parts[] = {"abc", "defgh", "ij"};
    for (int i = 0; i < 3; i++) {
        usleep(60000);
        assert_int_equal(write(pipe_w, parts[i], strlen(parts[i])), (ssize_t)strlen(parts[i]));
    }
    return NULL;
}

static volatile sig_atomic_t alarms;
static void on_alarm(int sig)
{
    (void)sig;
    alarms++;
}

static void test_a_pipe_read_whole_across_short_reads_and_a_signal(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    pipe_w = p[1];
    struct sigaction sa = {.sa_handler = on_alarm}, old; /* no SA_RESTART: a blocked read gets EINTR */
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
    sigset_t alrm, prev;
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &alrm, &prev); /* the writer thread never takes the signal */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_writer, NULL), 0);
    pthread_sigmask(SIG_SETMASK, &prev, NULL);
    struct itimerval it = {.it_value = {0, 20000}, .it_interval = {0, 0}};
    assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
    char b[10];
    size_t got = 0;
    assert_int_equal(ms_read_full(p[0], b, sizeof b, -1, &got), 0);
    assert_int_equal(got, 10);
    assert_memory_equal(b, "abcdefghij", 10);
    assert_true(alarms >= 1);
    pthread_join(t, NULL);
    sigaction(SIGALRM, &old, NULL);
    close(p[0]);
    close(p[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_at_an_offset_and_at_the_files_offset),
        cmocka_unit_test(test_a_full_device_and_a_bad_descriptor),
        cmocka_unit_test(test_a_pipe_read_whole_across_short_reads_and_a_signal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
