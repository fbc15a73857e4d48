#ifndef CMKFS_CFUSE3_SHIM_H
#define CMKFS_CFUSE3_SHIM_H
// libfuse only: the system calls and their constants are CMKSystem's (over CLinux).
// FUSE_USE_VERSION must precede the include: it selects the 3.5 ops ABI we implement.
#define FUSE_USE_VERSION 35
#include <fuse.h>
#include <fuse_lowlevel.h>

// fuse_session_loop_mt is a macro at this API version; Swift cannot call macros.
static inline int cmkfs_session_loop_mt(struct fuse_session *se, unsigned int max_idle_threads) {
    struct fuse_loop_config cfg = { .clone_fd = 0, .max_idle_threads = max_idle_threads };
    return fuse_session_loop_mt(se, &cfg);
}

// --- The kernel channel (docs/design-notes.md, "FUSE_HANDLE_KILLPRIV_V2") -----------------
// libfuse 3.14 cannot ask for FUSE_HANDLE_KILLPRIV_V2; the mount asks for it itself by adding
// the bit to libfuse's INIT reply on its way to the kernel (fuse_session_custom_io). These read
// the kernel's own structs (<linux/fuse.h>) from a request or reply; they keep no state.
#include <linux/fuse.h>
#include <stddef.h>
#include <sys/uio.h>
#include <string.h>

static const uint32_t CMKFS_FUSE_HANDLE_KILLPRIV_V2 = FUSE_HANDLE_KILLPRIV_V2;

// The request's unique id when `buf` holds an INIT request offering KILLPRIV_V2, else 0.
static inline uint64_t cmkfs_init_offering_killpriv_v2(const void *buf, size_t n) {
    struct fuse_in_header h;
    struct fuse_init_in in;
    if (n < sizeof h + offsetof(struct fuse_init_in, flags) + sizeof in.flags) return 0;
    memcpy(&h, buf, sizeof h);
    if (h.opcode != FUSE_INIT) return 0;
    memcpy(&in.flags, (const char *)buf + sizeof h + offsetof(struct fuse_init_in, flags), sizeof in.flags);
    return (in.flags & FUSE_HANDLE_KILLPRIV_V2) ? h.unique : 0;
}

// 1 when `buf` is a WRITE, SETATTR or O_TRUNC OPEN whose caller lacks CAP_FSETID: the server
// must clear the file's setuid/setgid bits (the kernel's FUSE_WRITE_KILL_SUIDGID,
// FATTR_KILL_SUIDGID, FUSE_OPEN_KILL_SUIDGID).
static inline int cmkfs_request_kills_suidgid(const void *buf, size_t n) {
    struct fuse_in_header h;
    if (n < sizeof h) return 0;
    memcpy(&h, buf, sizeof h);
    if (h.opcode == FUSE_OPEN && n >= sizeof h + sizeof(struct fuse_open_in)) {
        struct fuse_open_in o;
        memcpy(&o, (const char *)buf + sizeof h, sizeof o);
        return (o.open_flags & FUSE_OPEN_KILL_SUIDGID) != 0;
    }
    if (h.opcode == FUSE_WRITE && n >= sizeof h + sizeof(struct fuse_write_in)) {
        struct fuse_write_in w;
        memcpy(&w, (const char *)buf + sizeof h, sizeof w);
        return (w.write_flags & FUSE_WRITE_KILL_SUIDGID) != 0;
    }
    if (h.opcode == FUSE_SETATTR && n >= sizeof h + sizeof(uint32_t)) {
        uint32_t valid;
        memcpy(&valid, (const char *)buf + sizeof h, sizeof valid);
        return (valid & FATTR_KILL_SUIDGID) != 0;
    }
    return 0;
}

// The unique id of an INIT request, else 0.
static inline uint64_t cmkfs_init_unique(const void *buf, size_t n) {
    struct fuse_in_header h;
    if (n < sizeof h) return 0;
    memcpy(&h, buf, sizeof h);
    return h.opcode == FUSE_INIT ? h.unique : 0;
}

// The unique id a reply answers (0 for a notification or a malformed reply).
static inline uint64_t cmkfs_reply_unique(const struct iovec *iov, int count) {
    struct fuse_out_header h;
    if (count < 1 || iov[0].iov_len < sizeof h) return 0;
    memcpy(&h, iov[0].iov_base, sizeof h);
    return h.unique;
}

// FUSE_OVER_IO_URING (<linux/fuse.h> 7.42, newer than Debian 12's 7.38): INIT flag bit 41,
// i.e. bit 9 of flags2, which the kernel reads only when FUSE_INIT_EXT is set beside it.
static const uint32_t CMKFS_FUSE_OVER_IO_URING_FLAGS2 = 1u << 9;

// 1 when `buf` holds an INIT request whose kernel offers FUSE over io_uring (it does only while
// /sys/module/fuse/parameters/enable_uring is Y).
static inline int cmkfs_init_offering_io_uring(const void *buf, size_t n) {
    struct fuse_in_header h;
    struct fuse_init_in in;
    if (n < sizeof h + offsetof(struct fuse_init_in, flags2) + sizeof in.flags2) return 0;
    memcpy(&h, buf, sizeof h);
    if (h.opcode != FUSE_INIT) return 0;
    memcpy(&in, (const char *)buf + sizeof h, offsetof(struct fuse_init_in, flags2) + sizeof in.flags2);
    return (in.flags & FUSE_INIT_EXT) && (in.flags2 & CMKFS_FUSE_OVER_IO_URING_FLAGS2);
}

// Adds FUSE_OVER_IO_URING to the INIT reply in `iov` when it answers request `unique`. Returns
// the largest request payload the kernel will then send (what a ring entry's buffer must
// hold: FUSE_MIN_READ_BUFFER, max_write, max_pages pages), or 0 if it did not patch.
static inline size_t cmkfs_patch_init_reply_io_uring(struct iovec *iov, int count, uint64_t unique) {
    struct fuse_out_header h;
    struct fuse_init_out out;
    const size_t covered = offsetof(struct fuse_init_out, flags2) + sizeof out.flags2;
    if (count < 2 || iov[0].iov_len < sizeof h || iov[1].iov_len < covered) return 0;
    memcpy(&h, iov[0].iov_base, sizeof h);
    if (h.unique != unique || h.error != 0) return 0;
    memset(&out, 0, sizeof out);
    memcpy(&out, iov[1].iov_base, covered);
    out.flags |= FUSE_INIT_EXT;
    out.flags2 |= CMKFS_FUSE_OVER_IO_URING_FLAGS2;
    memcpy(iov[1].iov_base, &out, covered);
    size_t pages = (out.flags & FUSE_MAX_PAGES) ? (out.max_pages ? out.max_pages : 1) : 32;
    size_t payload = FUSE_MIN_READ_BUFFER;
    if (out.max_write > payload) payload = out.max_write;
    if (pages * 4096 > payload) payload = pages * 4096;
    return payload;
}

// Adds `flags` to the INIT reply in `iov` when it answers request `unique`; 1 if it did.
static inline int cmkfs_patch_init_reply(struct iovec *iov, int count, uint64_t unique, uint32_t flags) {
    struct fuse_out_header h;
    if (count < 2 || iov[0].iov_len < sizeof h) return 0;
    memcpy(&h, iov[0].iov_base, sizeof h);
    if (h.unique != unique || h.error != 0) return 0;
    if (iov[1].iov_len < offsetof(struct fuse_init_out, flags) + sizeof(uint32_t)) return 0;
    uint32_t current;
    char *at = (char *)iov[1].iov_base + offsetof(struct fuse_init_out, flags);
    memcpy(&current, at, sizeof current);
    current |= flags;
    memcpy(at, &current, sizeof current);
    return 1;
}

#endif
