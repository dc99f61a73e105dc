#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/fsverity.h>
#include <linux/openat2.h>
#include <errno.h>
#include <string.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <pthread.h>
#include <unistd.h>
#include "clinux.h"

int imgvol_sync_file_range_write(int fd, int64_t offset, int64_t length) {
    return sync_file_range(fd, (off64_t)offset, (off64_t)length, SYNC_FILE_RANGE_WRITE);
}

int imgvol_syncfs(int fd) { return syncfs(fd); }

int64_t imgvol_copy_file_range(int fd_in, int64_t off_in, int fd_out, int64_t off_out, size_t length) {
    loff_t in = (loff_t)off_in, out = (loff_t)off_out;
    return (int64_t)copy_file_range(fd_in, &in, fd_out, &out, length, 0);
}

int imgvol_o_direct(void) { return O_DIRECT; }

int imgvol_open_directory_beneath(int dirfd, const char *path) {
    struct open_how how = {
        .flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
    };
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

int imgvol_pidfd_open(pid_t pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

int imgvol_enable_verity(int fd) {
    struct fsverity_enable_arg arg = {
        .version = 1,
        .hash_algorithm = FS_VERITY_HASH_ALG_SHA256,
        .block_size = 4096,
    };
    return ioctl(fd, FS_IOC_ENABLE_VERITY, &arg);
}

int imgvol_has_verity(int fd) {
    int flags = 0;
    if (ioctl(fd, FS_IOC_GETFLAGS, &flags) != 0) return 0;
    return (flags & FS_VERITY_FL) != 0;
}

static int signal_pipe_write = -1;

static void imgvol_signal_to_pipe(int number) {
    int saved = errno;
    unsigned char byte = (unsigned char)number;
    if (write(signal_pipe_write, &byte, 1) < 0) { /* full: a signal is pending anyway */ }
    errno = saved;
}

int imgvol_signal_pipe(const int *signals, int count) {
    int ends[2];
    if (pipe2(ends, O_CLOEXEC | O_NONBLOCK) != 0) return -1;
    signal_pipe_write = ends[1];
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = imgvol_signal_to_pipe;
    action.sa_flags = SA_RESTART;
    sigfillset(&action.sa_mask);
    for (int i = 0; i < count; i++) {
        if (sigaction(signals[i], &action, NULL) != 0) return -1;
    }
    return ends[0];
}

int imgvol_read_signal(int fd) {
    unsigned char byte;
    ssize_t n = read(fd, &byte, 1);
    return n == 1 ? (int)byte : -1;
}

extern char **environ;

pid_t imgvol_spawn(const char *path, char *const argv[], int in_fd, int out_fd, int err_fd, int pass_fd) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_adddup2(&actions, in_fd, 0);
    posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
    posix_spawn_file_actions_adddup2(&actions, err_fd, 2);
    if (pass_fd >= 0) posix_spawn_file_actions_adddup2(&actions, pass_fd, 3);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid = -1;
    int err = posix_spawn(&pid, path, &actions, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    return err == 0 ? pid : -err;
}

int imgvol_watch_renames(const char *dir) {
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) return -1;
    if (inotify_add_watch(fd, dir, IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

void imgvol_drain(int fd) {
    char buf[4096];
    while (read(fd, buf, sizeof buf) > 0) {}
}
