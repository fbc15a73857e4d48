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
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <linux/fs.h>
#include <linux/falloc.h>

// fuse_loop_mt is a macro at this API version; Swift cannot call macros.
static inline int cmkfs_fuse_loop_mt(struct fuse *f, unsigned int max_idle_threads) {
    struct fuse_loop_config cfg = { .clone_fd = 0, .max_idle_threads = max_idle_threads };
    return fuse_loop_mt(f, &cfg);
}

// fuse_new is a macro (fuse_new_31) at this API version.
static inline struct fuse *cmkfs_fuse_new(struct fuse_args *args,
                                          const struct fuse_operations *op, void *user_data) {
    return fuse_new(args, op, sizeof(struct fuse_operations), user_data);
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
#endif
