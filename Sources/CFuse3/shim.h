#ifndef CMKFS_CFUSE3_SHIM_H
#define CMKFS_CFUSE3_SHIM_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
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
// fallocate is declared only under _GNU_SOURCE, which Swift's Glibc module does not set.
static inline int cmkfs_fallocate(int fd, int mode, off_t offset, off_t len) {
    return fallocate(fd, mode, offset, len);
}
// name_to_handle_at/open_by_handle_at need _GNU_SOURCE, and struct file_handle ends in a
// flexible array Swift cannot import: the handle travels as an opaque malloc'ed buffer.
static inline void *cmkfs_name_to_handle(int dirfd, const char *name, int flags) {
    struct file_handle *h = malloc(sizeof(struct file_handle) + MAX_HANDLE_SZ);
    if (!h) return NULL;
    h->handle_bytes = MAX_HANDLE_SZ;
    int mount_id;
    if (name_to_handle_at(dirfd, name, h, &mount_id, flags) != 0) {
        int e = errno; free(h); errno = e; return NULL;
    }
    return h;
}
static inline int cmkfs_open_by_handle(int mount_fd, void *handle, int flags) {
    return open_by_handle_at(mount_fd, (struct file_handle *)handle, flags);
}
#endif
