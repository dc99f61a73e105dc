#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/fsverity.h>
#include <linux/openat2.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
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
