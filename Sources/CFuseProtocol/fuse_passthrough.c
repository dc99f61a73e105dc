#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "fuse_passthrough.h"

/* The protocol facts used here (include/uapi/linux/fuse.h, protocol 7.40). Debian 12's
   kernel headers predate them, so they are spelled out. */
enum {
    fuse_opcode_init = 26,
    in_header_size = 40,             /* struct fuse_in_header */
    out_header_size = 16,            /* struct fuse_out_header; error at offset 4 */
    init_in_flags = 12,              /* struct fuse_init_in */
    init_in_flags2 = 16,
    init_out_flags = 12,             /* struct fuse_init_out */
    init_out_flags2 = 32,
    init_out_max_stack_depth = 36,
    init_out_size = 64,
    open_out_size = 16,              /* struct fuse_open_out */
    open_out_flags = 8,
    open_out_backing_id = 12,
};
#define FUSE_INIT_EXT_FLAG (1u << 30)
#define FLAGS2_PASSTHROUGH (1u << 5)  /* FUSE_PASSTHROUGH is bit 37 of the 64-bit flags */
#define FOPEN_PASSTHROUGH_FLAG (1u << 7)
#define FLAGS2_HAS_RESEND (1u << 7)   /* FUSE_HAS_RESEND is bit 39 (7.40) */
#define FUSE_NOTIFY_RESEND_CODE 7     /* enum fuse_notify_code (7.40) */

struct backing_map { int32_t fd; uint32_t flags; uint64_t padding; };
#define FUSE_DEV_IOC_BACKING_OPEN _IOW(229, 1, struct backing_map)

static atomic_int wanted = 1;
static atomic_int offered;
static atomic_int accepted;
static atomic_int init_replied;
static __thread int32_t open_backing;
/* The kernel's INIT request as read, for a server that takes the session over later. */
static unsigned char init_request[512];
static atomic_size_t init_request_len;
/* A taking-over server answers a replayed INIT; that reply must not reach the kernel. */
static atomic_int swallow_next_reply;

static uint32_t load32(const void *base, size_t offset) {
    uint32_t value;
    memcpy(&value, (const char *)base + offset, sizeof value);
    return value;
}

static void store32(void *base, size_t offset, uint32_t value) {
    memcpy((char *)base + offset, &value, sizeof value);
}

void imgvol_fuse_passthrough_want(int want) { atomic_store(&wanted, want); }
int imgvol_fuse_passthrough_accepted(void) { return atomic_load(&accepted); }
void imgvol_fuse_set_open_backing(int32_t id) { open_backing = id; }

int32_t imgvol_fuse_backing_open(int session_fd, int file_fd) {
    struct backing_map map = { .fd = file_fd, .flags = 0, .padding = 0 };
    int id = ioctl(session_fd, FUSE_DEV_IOC_BACKING_OPEN, &map);
    return id > 0 ? id : -errno;
}

ssize_t imgvol_fuse_io_read(int fd, void *buf, size_t len, void *userdata) {
    (void)userdata;
    ssize_t n = read(fd, buf, len);
    if (!atomic_load(&init_replied) && n >= in_header_size + init_in_flags2 + 4
        && load32(buf, 4) == fuse_opcode_init) {
        uint32_t flags = load32(buf, in_header_size + init_in_flags);
        uint32_t flags2 = load32(buf, in_header_size + init_in_flags2);
        atomic_store(&offered, (flags & FUSE_INIT_EXT_FLAG) && (flags2 & FLAGS2_PASSTHROUGH));
        size_t kept = (size_t)n < sizeof init_request ? (size_t)n : sizeof init_request;
        memcpy(init_request, buf, kept);
        atomic_store(&init_request_len, kept);
    }
    return n;
}

ssize_t imgvol_fuse_io_writev(int fd, struct iovec *iov, int count, void *userdata) {
    (void)userdata;
    /* A successful reply is libfuse's header and one argument. */
    if (atomic_exchange(&swallow_next_reply, 0)) {
        ssize_t total = 0;
        for (int i = 0; i < count; i++) total += (ssize_t)iov[i].iov_len;
        return total;
    }
    int plain_ok = count == 2 && iov[0].iov_len == out_header_size && load32(iov[0].iov_base, 4) == 0;
    if (!atomic_exchange(&init_replied, 1)) {
        /* The kernel sends nothing before INIT is answered: the first reply is INIT's. */
        if (plain_ok && iov[1].iov_len == init_out_size && atomic_load(&offered) && atomic_load(&wanted)) {
            unsigned char reply[init_out_size];
            memcpy(reply, iov[1].iov_base, sizeof reply);
            store32(reply, init_out_flags, load32(reply, init_out_flags) | FUSE_INIT_EXT_FLAG);
            store32(reply, init_out_flags2, load32(reply, init_out_flags2) | FLAGS2_PASSTHROUGH);
            store32(reply, init_out_max_stack_depth, 1);
            struct iovec patched[2] = { iov[0], { reply, sizeof reply } };
            ssize_t n = writev(fd, patched, 2);
            if (n >= 0) atomic_store(&accepted, 1);
            return n;
        }
        return writev(fd, iov, count);
    }
    int32_t id = open_backing;
    if (id > 0 && plain_ok && iov[1].iov_len == open_out_size) {
        open_backing = 0;
        unsigned char reply[open_out_size];
        memcpy(reply, iov[1].iov_base, sizeof reply);
        store32(reply, open_out_flags, load32(reply, open_out_flags) | FOPEN_PASSTHROUGH_FLAG);
        store32(reply, open_out_backing_id, (uint32_t)id);
        struct iovec patched[2] = { iov[0], { reply, sizeof reply } };
        return writev(fd, patched, 2);
    }
    return writev(fd, iov, count);
}

ssize_t imgvol_fuse_io_splice_send(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
                                   unsigned int flags, void *userdata) {
    (void)userdata;
    return splice(fdin, offin, fdout, offout, len, flags);
}

size_t imgvol_fuse_init_request(void *buf, size_t cap) {
    size_t len = atomic_load(&init_request_len);
    if (len > cap) len = cap;
    memcpy(buf, init_request, len);
    return len;
}

int imgvol_fuse_passthrough_offered(void) { return atomic_load(&offered); }

void imgvol_fuse_takeover(int passthrough_accepted) {
    atomic_store(&accepted, passthrough_accepted);
    atomic_store(&init_replied, 1);
    atomic_store(&swallow_next_reply, 1);
}

int imgvol_fuse_init_has_resend(const void *init, size_t len) {
    if (len < in_header_size + init_in_flags2 + 4 || load32(init, 4) != fuse_opcode_init) return 0;
    uint32_t flags = load32(init, in_header_size + init_in_flags);
    uint32_t flags2 = load32(init, in_header_size + init_in_flags2);
    return (flags & FUSE_INIT_EXT_FLAG) && (flags2 & FLAGS2_HAS_RESEND);
}

int imgvol_fuse_notify_resend(int fd) {
    unsigned char header[out_header_size] = {0};
    store32(header, 0, out_header_size);
    store32(header, 4, FUSE_NOTIFY_RESEND_CODE);
    ssize_t n = write(fd, header, sizeof header);
    return n == (ssize_t)sizeof header ? 0 : -errno;
}
