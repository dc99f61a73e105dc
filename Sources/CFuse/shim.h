#ifndef IMGVOL_CFUSE_SHIM_H
#define IMGVOL_CFUSE_SHIM_H
#define FUSE_USE_VERSION 35
#include <stddef.h>
#include <fcntl.h>
#include <fuse3/fuse_lowlevel.h>
#include <sys/sysmacros.h>
#include <errno.h>

/* Entry points libfuse hides behind version macros, and struct initialisers Swift cannot
   spell; each wrapped once here. */

static inline int imgvol_session_loop_mt(struct fuse_session *se, int clone_fd, unsigned int max_idle) {
    struct fuse_loop_config config = { .clone_fd = clone_fd, .max_idle_threads = max_idle };
    return fuse_session_loop_mt(se, &config);
}

/* Replies to a read with bytes straight from a file descriptor: with splice enabled the
   kernel moves them from the page cache without a copy through this process. */
static inline int imgvol_reply_fd(fuse_req_t req, int fd, off_t pos, size_t size) {
    struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
    buf.buf[0].flags = (enum fuse_buf_flags)(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = fd;
    buf.buf[0].pos = pos;
    return fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

static inline void imgvol_want_capabilities(struct fuse_conn_info *conn) {
    unsigned wanted = FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_ASYNC_READ
        | FUSE_CAP_READDIRPLUS | FUSE_CAP_CACHE_SYMLINKS | FUSE_CAP_PARALLEL_DIROPS;
    conn->want |= (conn->capable & wanted);
    conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
    conn->max_readahead = conn->max_readahead > (1u << 20) ? conn->max_readahead : (1u << 20);
    conn->max_read = 1u << 20; /* must equal the max_read mount option */
}

static inline int imgvol_open_flags(const struct fuse_file_info *fi) { return fi->flags; }

static inline void imgvol_set_keep_cache(struct fuse_file_info *fi) {
    fi->keep_cache = 1;
    fi->noflush = 1;
}

/* fh: the descriptor a file stored apart is read from, set at open. */
static inline void imgvol_set_file_handle(struct fuse_file_info *fi, uint64_t fh) { fi->fh = fh; }
static inline uint64_t imgvol_file_handle(const struct fuse_file_info *fi) { return fi->fh; }

static inline void imgvol_set_noflush(struct fuse_file_info *fi) { fi->noflush = 1; }

static inline void imgvol_set_cache_readdir(struct fuse_file_info *fi) {
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
}

/* Hands libfuse a request read elsewhere (a replayed INIT). */
static inline void imgvol_process_request(struct fuse_session *se, void *mem, size_t size) {
    struct fuse_buf buf = { .size = size, .flags = (enum fuse_buf_flags)0, .mem = mem, .fd = -1, .pos = 0 };
    fuse_session_process_buf(se, &buf);
}

static inline dev_t imgvol_makedev(unsigned int major, unsigned int minor) { return makedev(major, minor); }
#endif
