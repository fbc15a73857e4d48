#ifndef CMKFS_CLINUXFS_SHIM_H
#define CMKFS_CLINUXFS_SHIM_H
// ioctl(2) is variadic, which Swift cannot call: one wrapper for the inode flags the audit log
// sets (chattr +a), and the prctl(2) calls that keep key material out of core dumps.
#include <errno.h>
#include <sys/ioctl.h>
#include <sys/types.h>
#include <linux/fs.h>
#include <sys/prctl.h>

/// Sets FS_APPEND_FL on `fd` (FS_IOC_GETFLAGS, then FS_IOC_SETFLAGS). Returns 0 or an errno:
/// EPERM without CAP_LINUX_IMMUTABLE, ENOTTY/EOPNOTSUPP where the filesystem has no such flag.
static inline int cmkfs_set_append_only(int fd) {
    int flags = 0;
    if (ioctl(fd, FS_IOC_GETFLAGS, &flags) != 0) return errno;
    if (flags & FS_APPEND_FL) return 0;
    flags |= FS_APPEND_FL;
    if (ioctl(fd, FS_IOC_SETFLAGS, &flags) != 0) return errno;
    return 0;
}

// prctl(2) is variadic too. Makes the calling process non-dumpable: no core file, and no
// ptrace or /proc/PID/mem access by anyone but root (CAP_SYS_PTRACE). Returns 0 or an errno.
static inline int cmkfs_forbid_core_dumps(void) {
    return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0 ? 0 : errno;
}

/// Whether the calling process may dump core (PR_GET_DUMPABLE): 1, 0, or -1 with errno.
static inline int cmkfs_dumpable(void) {
    return prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
}

// fallocate(2) is a GNU extension (hidden without _GNU_SOURCE, which clashes with Swift's Glibc
// module): declared here. Used with FALLOC_FL_KEEP_SIZE (1) to reserve room for audit records.
extern int fallocate(int fd, int mode, off_t offset, off_t len);

/// Allocates `len` bytes at `offset` without changing the file size (FALLOC_FL_KEEP_SIZE).
/// Allowed on append-only files. Returns 0 or an errno.
static inline int cmkfs_reserve(int fd, off_t offset, off_t len) {
    return fallocate(fd, 1, offset, len) == 0 ? 0 : errno;
}
// O_NOATIME (a _GNU_SOURCE macro Swift's Glibc module does not show): reads through the
// descriptor leave the access time alone. The daemon is root, which may set it on any file.
static const int CMKFS_O_NOATIME = 01000000;
#endif
