/* Processes whose threads end in the ways that make "which thread ends the
 * process" hard to see from sched_process_exit (tests/test_thread_exit.py).
 *
 *   thread_exit together THREADS CODE   THREADS threads meet at a barrier,
 *       then one calls exit(CODE): the group exit kills the others, so every
 *       thread passes do_exit at the same moment
 *   thread_exit each THREADS CODE       THREADS threads meet at a barrier and
 *       each calls the exit system call (not exit_group) with CODE at once
 *   thread_exit leader-first CODE       the main thread calls pthread_exit;
 *       a second thread waits until the leader is a zombie, then exit(CODE)
 *   thread_exit leader-first-raw CODE   the same, but the second thread uses
 *       the exit system call: the parent then sees the leader's status
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_barrier_t barrier;
static int code;
static int mode_each;
static pid_t leader;

static void *together(void *arg)
{
    long i = (long)arg;
    pthread_barrier_wait(&barrier);
    if (mode_each)
        syscall(SYS_exit, code);
    if (i == 1)
        exit(code);
    for (;;)
        pause();
}

static int leader_gone(void)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)leader);
    FILE *f = fopen(path, "r");
    if (!f)
        return 1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && (p[2] == 'Z' || p[2] == 'X');
}

static void *survivor(void *arg)
{
    int raw = (int)(long)arg;
    while (!leader_gone())
        usleep(200);
    if (raw)
        syscall(SYS_exit, code);
    exit(code);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 100;
    leader = getpid();
    if (!strcmp(argv[1], "together") || !strcmp(argv[1], "each")) {
        int n = atoi(argv[2]);
        code = atoi(argv[3]);
        mode_each = !strcmp(argv[1], "each");
        pthread_barrier_init(&barrier, NULL, n);
        for (long i = 1; i < n; i++) {
            pthread_t t;
            if (pthread_create(&t, NULL, together, (void *)i))
                return 101;
        }
        together((void *)0);
    }
    code = atoi(argv[2]);
    pthread_t t;
    if (pthread_create(&t, NULL, survivor, (void *)(long)!strcmp(argv[1], "leader-first-raw")))
        return 101;
    pthread_exit(NULL);
}
