#ifndef CMKFS_CFUSE3_SHIM_H
#define CMKFS_CFUSE3_SHIM_H
// FUSE_USE_VERSION must precede the include: it selects the 3.5 ops ABI we implement.
#define FUSE_USE_VERSION 35
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <linux/fs.h>
#include <linux/falloc.h>

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

// 1 when `buf` is a WRITE or SETATTR whose caller lacks CAP_FSETID: the server must clear the
// file's setuid/setgid bits (the kernel's FUSE_WRITE_KILL_SUIDGID / FATTR_KILL_SUIDGID).
static inline int cmkfs_request_kills_suidgid(const void *buf, size_t n) {
    struct fuse_in_header h;
    if (n < sizeof h) return 0;
    memcpy(&h, buf, sizeof h);
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

// renameat2 has no glibc wrapper usable from Swift on Debian 12; syscall() is variadic.
static inline int cmkfs_renameat2(int olddirfd, const char *oldpath,
                                  int newdirfd, const char *newpath, unsigned int flags) {
    return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
}

// errno is a macro over a thread-local; expose it as a function.
static inline int cmkfs_errno(void) { return errno; }

// open() is variadic in C.
static inline int cmkfs_open(const char *path, int flags, mode_t mode) {
    return open(path, flags, mode);
}
// What follows is declared by glibc only under _GNU_SOURCE, and defining _GNU_SOURCE here
// changes glibc's struct definitions (fd_set) so they clash with Swift's Glibc module on a
// clean build. So the few GNU declarations we need are spelled out (Linux ABI, x86_64/arm64).
extern int fallocate(int fd, int mode, off_t offset, off_t len);
extern int name_to_handle_at(int dirfd, const char *name, void *handle, int *mount_id, int flags);
extern int open_by_handle_at(int mount_fd, void *handle, int flags);

#define CMKFS_MAX_HANDLE_SZ 128
static const int CMKFS_O_PATH = 010000000;
static const int CMKFS_AT_EMPTY_PATH = 0x1000;
// O_TMPFILE (__O_TMPFILE | O_DIRECTORY): an unnamed file in a directory, linked in later.
static const int CMKFS_O_TMPFILE = 020000000 | 0200000;

// struct file_handle's layout: handle_bytes, handle_type, then the handle itself.
struct cmkfs_file_handle {
    unsigned int handle_bytes;
    int handle_type;
    unsigned char f_handle[CMKFS_MAX_HANDLE_SZ];
};

static inline int cmkfs_fallocate(int fd, int mode, off_t offset, off_t len) {
    return fallocate(fd, mode, offset, len);
}

// The handle travels as an opaque malloc'ed buffer (Swift cannot import flexible arrays).
static inline void *cmkfs_name_to_handle(int dirfd, const char *name, int flags) {
    struct cmkfs_file_handle *h = malloc(sizeof(struct cmkfs_file_handle));
    if (!h) return NULL;
    h->handle_bytes = CMKFS_MAX_HANDLE_SZ;
    int mount_id;
    if (name_to_handle_at(dirfd, name, h, &mount_id, flags) != 0) {
        int e = errno; free(h); errno = e; return NULL;
    }
    return h;
}
static inline int cmkfs_open_by_handle(int mount_fd, void *handle, int flags) {
    return open_by_handle_at(mount_fd, handle, flags);
}
#endif
