#define _GNU_SOURCE
#include "CURing.h"
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/sysinfo.h>
#include <sys/uio.h>

enum { CMKFS_FUSE_IO_URING_CMD_REGISTER = 1, CMKFS_FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2 };

// The command area of a 128-byte SQE (struct fuse_uring_cmd_req).
struct cmkfs_fuse_uring_cmd_req {
    uint64_t flags;
    uint64_t commit_id;
    uint16_t qid;
    uint8_t padding[6];
};
_Static_assert(sizeof(struct cmkfs_fuse_uring_cmd_req) <= 80, "the SQE128 command area holds 80 bytes");
_Static_assert(sizeof(struct cmkfs_fuse_uring_req_header) == 288, "fuse_uring_req_header is 288 bytes");

struct cmkfs_ring {
    struct io_uring ring;
    // REGISTER's iovec must outlive the submission; the kernel reads it while issuing.
    struct iovec iov[2];
};

cmkfs_ring *cmkfs_ring_open(unsigned entries, int *error) {
    cmkfs_ring *r = calloc(1, sizeof *r);
    if (!r) { *error = ENOMEM; return NULL; }
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE;
    p.cq_entries = entries * 2;
    int rc = io_uring_queue_init_params(entries, &r->ring, &p);
    if (rc < 0) { free(r); *error = -rc; return NULL; }
    return r;
}

void cmkfs_ring_close(cmkfs_ring *r) {
    if (!r) return;
    io_uring_queue_exit(&r->ring);
    free(r);
}

static struct io_uring_sqe *fuse_command(cmkfs_ring *r, int fuse_fd, uint32_t op, uint16_t qid, uint64_t commit_id,
                                         uint64_t user_data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (!sqe) return NULL;
    memset(sqe, 0, 128);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = fuse_fd;
    sqe->cmd_op = op;
    sqe->user_data = user_data;
    struct cmkfs_fuse_uring_cmd_req *req = (struct cmkfs_fuse_uring_cmd_req *)sqe->cmd;
    req->qid = qid;
    req->commit_id = commit_id;
    return sqe;
}

int cmkfs_ring_prep_fuse_register(cmkfs_ring *r, int fuse_fd, uint16_t qid, void *header, size_t header_len,
                                  void *payload, size_t payload_len, uint64_t user_data) {
    struct io_uring_sqe *sqe = fuse_command(r, fuse_fd, CMKFS_FUSE_IO_URING_CMD_REGISTER, qid, 0, user_data);
    if (!sqe) return -EBUSY;
    r->iov[0].iov_base = header;
    r->iov[0].iov_len = header_len;
    r->iov[1].iov_base = payload;
    r->iov[1].iov_len = payload_len;
    sqe->addr = (uint64_t)(uintptr_t)r->iov;
    sqe->len = 2;
    return 0;
}

int cmkfs_ring_prep_fuse_commit(cmkfs_ring *r, int fuse_fd, uint16_t qid, uint64_t commit_id, uint64_t user_data) {
    return fuse_command(r, fuse_fd, CMKFS_FUSE_IO_URING_CMD_COMMIT_AND_FETCH, qid, commit_id, user_data) ? 0 : -EBUSY;
}

int cmkfs_ring_prep_poll_in(cmkfs_ring *r, int fd, uint64_t user_data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_poll_add(sqe, fd, POLLIN);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int cmkfs_ring_submit_and_wait(cmkfs_ring *r) {
    return io_uring_submit_and_wait(&r->ring, 1);
}

int cmkfs_ring_next_completion(cmkfs_ring *r, uint64_t *user_data, int32_t *result) {
    struct io_uring_cqe *cqe = NULL;
    if (io_uring_peek_cqe(&r->ring, &cqe) != 0 || !cqe) return 0;
    *user_data = io_uring_cqe_get_data64(cqe);
    *result = cqe->res;
    io_uring_cqe_seen(&r->ring, cqe);
    return 1;
}

int cmkfs_eventfd(void) { return eventfd(0, EFD_CLOEXEC); }


int cmkfs_possible_cpus(void) { return get_nprocs_conf(); }

int cmkfs_name_current_thread(const char *name) { return pthread_setname_np(pthread_self(), name); }
