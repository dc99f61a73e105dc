#ifndef IMGVOL_FUSE_PASSTHROUGH_H
#define IMGVOL_FUSE_PASSTHROUGH_H
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* FUSE passthrough (Linux 6.9+): reads of an open file go from the kernel straight to a
   backing file, with its page cache, as fast as a native read. libfuse 3.14 predates it, so
   these are a session's custom I/O functions that add it to the protocol on the way: they
   watch the kernel's INIT offer, accept it in libfuse's INIT reply, and turn an open reply
   into a passthrough one when the replying thread asked for it. One FUSE session per
   process (imgvol serves each mount from its own process). */

/* For fuse_custom_io: plain read/writev/splice on the session's descriptor, plus the above.
   No splice_receive: requests are read with read(2), so the INIT offer is seen here. */
ssize_t imgvol_fuse_io_read(int fd, void *buf, size_t len, void *userdata);
ssize_t imgvol_fuse_io_writev(int fd, struct iovec *iov, int count, void *userdata);
ssize_t imgvol_fuse_io_splice_send(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
                                   unsigned int flags, void *userdata);

/* Whether the INIT reply accepted passthrough (the kernel offered it; we wanted it). */
int imgvol_fuse_passthrough_accepted(void);
/* Set before the mount's handshake: 0 leaves the kernel's offer declined. */
void imgvol_fuse_passthrough_want(int want);
/* Registers an open file as a backing file: its id (> 0), or -errno (EPERM without
   CAP_SYS_ADMIN, ELOOP on a stacked file system, ...). */
int32_t imgvol_fuse_backing_open(int session_fd, int file_fd);
/* The next open reply this thread sends passes through to backing file `id` (0: none). */
void imgvol_fuse_set_open_backing(int32_t id);

/* Taking a session over (a new server on the /dev/fuse descriptor of a mount whose server
   died): the kernel does not send INIT again, so the new server replays the one the first
   server read, and its reply is dropped here; then the kernel is asked to send again the
   requests the dead server had read but not answered (FUSE_NOTIFY_RESEND, 7.40). */
/* The INIT request this process read from the kernel (0 bytes before it came). */
size_t imgvol_fuse_init_request(void *buf, size_t cap);
/* Whether the kernel's INIT offered passthrough. */
int imgvol_fuse_passthrough_offered(void);
/* Before replaying INIT: the next reply is dropped; passthrough is as the first server left it. */
void imgvol_fuse_takeover(int passthrough_accepted);
/* Whether the kernel that sent this INIT can resend pending requests. */
int imgvol_fuse_init_has_resend(const void *init, size_t len);
/* Asks the kernel to queue again every request read but not answered: 0 or -errno. */
int imgvol_fuse_notify_resend(int fd);
#endif
