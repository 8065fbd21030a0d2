/* Shared by the C unit tests of cython/c (make c-test): checks that stay on under
** NDEBUG, and a child process that must finish in time (a deadlocked child fails). */
#ifndef ST_TEST_H
#define ST_TEST_H
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Wait for child pid, killing it after `seconds`; 1 if it exited with status 0. */
static inline int st_test_child_ok(pid_t pid, int seconds) {
    int status = 0;
    for (int i = 0; i < seconds * 100; i++) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) && WEXITSTATUS(status) == 0;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    fprintf(stderr, "child %d did not finish in %d s (deadlocked?)\n", (int)pid, seconds);
    return 0;
}
#endif
