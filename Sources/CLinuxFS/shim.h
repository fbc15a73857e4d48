#ifndef CMKFS_CLINUXFS_SHIM_H
#define CMKFS_CLINUXFS_SHIM_H
// ioctl(2) is variadic, which Swift cannot call: one wrapper for the inode flags the audit log
// sets (chattr +a).
#include <errno.h>
#include <sys/ioctl.h>
#include <linux/fs.h>

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
#endif
