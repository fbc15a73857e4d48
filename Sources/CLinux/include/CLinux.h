#ifndef CMKFS_CLINUX_H
#define CMKFS_CLINUX_H
// The Linux calls and constants Swift's Glibc module does not show: variadic calls (open,
// fcntl, ioctl, prctl), glibc's GNU extensions (hidden without _GNU_SOURCE, which clashes with
// the Glibc module when set in a header Swift imports).
// They are compiled in CLinux.c, which sets _GNU_SOURCE for itself, so the constants below are
// the system headers' own values, not copies. Only CMKSystem imports this module.
#include <sys/types.h>

// open(2), openat(2), fcntl(2) with an int argument: variadic in C.
int cmkfs_openat(int dirfd, const char *path, int flags, mode_t mode);
int cmkfs_fcntl_int(int fd, int cmd, int arg);

/// accept4(2) with SOCK_CLOEXEC, the peer's address not asked for.
int cmkfs_accept_cloexec(int fd);
/// pipe2(2) with O_CLOEXEC.
int cmkfs_pipe_cloexec(int fds[2]);
/// getsockopt(SO_PEERCRED) into `pid`, `uid`, `gid` (struct ucred is declared only under
/// _GNU_SOURCE). Returns 0, or -1 with errno.
int cmkfs_peer_credentials(int fd, int *pid, unsigned int *uid, unsigned int *gid);

/// renameat2(2) with RENAME_NOREPLACE / RENAME_EXCHANGE.
int cmkfs_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags);
/// fallocate(2).
int cmkfs_fallocate(int fd, int mode, off_t offset, off_t len);
/// fchmodat2(2) (Linux 6.6) with AT_EMPTY_PATH: changes the mode of the file `fd` names, even
/// an O_PATH descriptor, without a walk through /proc. -1 with ENOSYS on an older kernel
/// (glibc 2.36 has no wrapper).
int cmkfs_fchmod_empty_path(int fd, mode_t mode);

/// name_to_handle_at(2) into a malloc'ed opaque handle (Swift cannot import the flexible
/// array of struct file_handle), or NULL with errno set. Free it with free(3).
void *cmkfs_name_to_handle(int dirfd, const char *name, int flags);
/// open_by_handle_at(2) with a handle from cmkfs_name_to_handle.
int cmkfs_open_by_handle(int mount_fd, void *handle, int flags);

/// Sets FS_APPEND_FL (chattr +a) on `fd`. Returns 0 or an errno: EPERM without
/// CAP_LINUX_IMMUTABLE, ENOTTY/EOPNOTSUPP where the filesystem has no such flag.
int cmkfs_set_append_only(int fd);
/// prctl(PR_SET_DUMPABLE, 0). Returns 0 or an errno.
int cmkfs_forbid_core_dumps(void);
/// prctl(PR_GET_DUMPABLE): 1, 0, or -1 with errno.
int cmkfs_dumpable(void);
/// mallopt(M_ARENA_MAX, count) (<malloc.h>, not in Swift's Glibc module). Returns 0, or EINVAL
/// when glibc refuses it.
int cmkfs_limit_malloc_arenas(int count);

// Constants from <fcntl.h> and <linux/falloc.h> under _GNU_SOURCE.
extern const int CMKFS_O_PATH;
extern const int CMKFS_O_TMPFILE;
extern const int CMKFS_O_NOATIME;
extern const int CMKFS_AT_EMPTY_PATH;
extern const int CMKFS_FALLOC_FL_KEEP_SIZE;
extern const int CMKFS_FALLOC_FL_PUNCH_HOLE;
extern const unsigned int CMKFS_RENAME_NOREPLACE;
extern const unsigned int CMKFS_RENAME_EXCHANGE;
#endif
