#ifndef IMGVOL_CLINUX_H
#define IMGVOL_CLINUX_H
#include <sys/types.h>
#include <stdint.h>
#include <sys/xattr.h>

/// Linux calls that glibc declares only under _GNU_SOURCE, which Swift's Glibc module does not set.
int imgvol_sync_file_range_write(int fd, int64_t offset, int64_t length);
int64_t imgvol_copy_file_range(int fd_in, int64_t off_in, int fd_out, int64_t off_out, size_t length);
int imgvol_syncfs(int fd);
/// O_DIRECT, which Swift's Glibc module does not export.
int imgvol_o_direct(void);
/// A directory below `dirfd` (at `path`, relative), reached without following any symlink
/// and without leaving `dirfd` (openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS). -1 with
/// errno set, ENOSYS on kernels before 5.6 (or EPERM where a seccomp filter refuses it).
int imgvol_open_directory_beneath(int dirfd, const char *path);
/// A descriptor that becomes readable when process `pid` exits (pidfd_open, Linux 5.3+);
/// -1 with errno set (ESRCH: no such process).
int imgvol_pidfd_open(pid_t pid);
/// Turns on fs-verity for a file opened read-only with no writer (sha256, 4 KiB blocks): the
/// kernel then checks every read of it. -1 with errno set: EOPNOTSUPP or ENOTTY where the file
/// system (or kernel) has no fs-verity, EEXIST when it is on already.
int imgvol_enable_verity(int fd);
/// 1 when fs-verity is on for the file.
int imgvol_has_verity(int fd);
/// Turns `signals` into bytes on a pipe, whichever thread they land on (a handler writes
/// each signal's number); returns the pipe's read end (close-on-exec), -1 with errno set.
/// One such pipe per process.
int imgvol_signal_pipe(const int *signals, int count);
/// The number of the next signal read from that pipe; -1 with errno set.
int imgvol_read_signal(int fd);
/// Starts `path argv` with its standard input, output and error on the given descriptors
/// and `pass_fd` as descriptor 3 (-1: none), the signal mask empty and default dispositions;
/// the child's pid, or -errno.
pid_t imgvol_spawn(const char *path, char *const argv[], int in_fd, int out_fd, int err_fd, int pass_fd);
/// An inotify descriptor (non-blocking, close-on-exec) reporting files renamed into `dir`
/// (an atomic write's last step); -1 with errno set.
int imgvol_watch_renames(const char *dir);
/// Discards what an inotify descriptor has queued.
void imgvol_drain(int fd);
#endif
