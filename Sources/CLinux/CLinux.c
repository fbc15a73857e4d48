// _GNU_SOURCE here, in a translation unit of its own, and never in a header Swift imports.
#define _GNU_SOURCE
#include "CLinux.h"
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdlib.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/fs.h>
#include <linux/falloc.h>

#define CMKFS_MAX_HANDLE_SZ 128

const int CMKFS_O_PATH = O_PATH;
const int CMKFS_O_TMPFILE = O_TMPFILE;
const int CMKFS_O_NOATIME = O_NOATIME;
const int CMKFS_AT_EMPTY_PATH = AT_EMPTY_PATH;
const int CMKFS_FALLOC_FL_KEEP_SIZE = FALLOC_FL_KEEP_SIZE;
const int CMKFS_FALLOC_FL_PUNCH_HOLE = FALLOC_FL_PUNCH_HOLE;
const unsigned int CMKFS_RENAME_NOREPLACE = RENAME_NOREPLACE;
const unsigned int CMKFS_RENAME_EXCHANGE = RENAME_EXCHANGE;

int cmkfs_openat(int dirfd, const char *path, int flags, mode_t mode) {
    return openat(dirfd, path, flags, mode);
}

int cmkfs_fcntl_int(int fd, int cmd, int arg) { return fcntl(fd, cmd, arg); }

int cmkfs_accept_cloexec(int fd) { return accept4(fd, NULL, NULL, SOCK_CLOEXEC); }

int cmkfs_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int cmkfs_peer_credentials(int fd, int *pid, unsigned int *uid, unsigned int *gid) {
    struct ucred cred;
    socklen_t length = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) return -1;
    if (length != sizeof cred) { errno = EINVAL; return -1; }
    *pid = cred.pid; *uid = cred.uid; *gid = cred.gid;
    return 0;
}

int cmkfs_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    return renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
}

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif

int cmkfs_fchmod_empty_path(int fd, mode_t mode) {
    return (int)syscall(SYS_fchmodat2, fd, "", mode, AT_EMPTY_PATH);
}

int cmkfs_fallocate(int fd, int mode, off_t offset, off_t len) {
    return fallocate(fd, mode, offset, len);
}

void *cmkfs_name_to_handle(int dirfd, const char *name, int flags) {
    struct file_handle *h = malloc(sizeof(struct file_handle) + CMKFS_MAX_HANDLE_SZ);
    if (!h) { errno = ENOMEM; return NULL; }
    h->handle_bytes = CMKFS_MAX_HANDLE_SZ;
    int mount_id;
    if (name_to_handle_at(dirfd, name, h, &mount_id, flags) != 0) {
        int e = errno; free(h); errno = e; return NULL;
    }
    return h;
}

int cmkfs_open_by_handle(int mount_fd, void *handle, int flags) {
    return open_by_handle_at(mount_fd, (struct file_handle *)handle, flags);
}

int cmkfs_set_append_only(int fd) {
    int flags = 0;
    if (ioctl(fd, FS_IOC_GETFLAGS, &flags) != 0) return errno;
    if (flags & FS_APPEND_FL) return 0;
    flags |= FS_APPEND_FL;
    if (ioctl(fd, FS_IOC_SETFLAGS, &flags) != 0) return errno;
    return 0;
}

int cmkfs_forbid_core_dumps(void) { return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0 ? 0 : errno; }

int cmkfs_dumpable(void) { return prctl(PR_GET_DUMPABLE, 0, 0, 0, 0); }

int cmkfs_limit_malloc_arenas(int count) { return mallopt(M_ARENA_MAX, count) == 1 ? 0 : EINVAL; }
