#ifndef CMKFS_CURING_H
#define CMKFS_CURING_H
// FUSE over io_uring (Linux 6.14+, CONFIG_FUSE_IO_URING): the kernel's ABI for it, which
// Debian 12's <linux/fuse.h> (7.38) predates, and a ring driven through liburing. liburing's
// header needs _GNU_SOURCE (cpu_set_t), which clashes with Swift's Glibc module, so the ring
// lives in CURing.c behind an opaque type, as CLinux does. Only CMKSystem imports this module.
#include <stddef.h>
#include <stdint.h>

// <linux/fuse.h> 7.42: FUSE_OVER_IO_URING is INIT flag bit 41, i.e. bit 9 of flags2, which the
// kernel reads only when the reply also sets FUSE_INIT_EXT.
#define CMKFS_FUSE_INIT_EXT (1u << 30)
#define CMKFS_FUSE_MAX_PAGES (1u << 22)
#define CMKFS_FUSE_OVER_IO_URING_FLAGS2 (1u << 9)

// The per-entry header buffer (iov[0] of a REGISTER): the kernel writes the request's
// fuse_in_header into in_out, its first argument (the opcode's fixed struct) into op_in, and
// the rest into the payload buffer; the daemon writes the fuse_out_header into in_out and the
// reply's arguments into the payload.
struct cmkfs_fuse_uring_ent_in_out {
    uint64_t flags;
    uint64_t commit_id;   // the request's unique id, echoed in the commit
    uint32_t payload_sz;  // bytes of the payload buffer in use, either way
    uint32_t padding;
    uint64_t reserved;
};
struct cmkfs_fuse_uring_req_header {
    char in_out[128];
    char op_in[128];
    struct cmkfs_fuse_uring_ent_in_out ring_ent_in_out;
};

/// One io_uring instance with 128-byte SQEs (the FUSE commands ride in the SQE's command area).
typedef struct cmkfs_ring cmkfs_ring;

/// A ring of `entries` submission slots, or NULL with `*error` set to a positive errno.
cmkfs_ring *cmkfs_ring_open(unsigned entries, int *error);
void cmkfs_ring_close(cmkfs_ring *ring);

/// Queues FUSE_IO_URING_CMD_REGISTER for one entry on queue `qid` of the FUSE connection
/// `fuse_fd`: `header` (a cmkfs_fuse_uring_req_header) and `payload` stay the entry's buffers
/// until the ring is closed. 0, or -EBUSY when no slot is free.
int cmkfs_ring_prep_fuse_register(cmkfs_ring *ring, int fuse_fd, uint16_t qid, void *header, size_t header_len,
                                  void *payload, size_t payload_len, uint64_t user_data);
/// Queues FUSE_IO_URING_CMD_COMMIT_AND_FETCH: hands the reply in the entry's buffers to the
/// kernel and asks for the next request. 0, or -EBUSY.
int cmkfs_ring_prep_fuse_commit(cmkfs_ring *ring, int fuse_fd, uint16_t qid, uint64_t commit_id, uint64_t user_data);
/// Queues a one-shot poll for POLLIN on `fd`. 0, or -EBUSY.
int cmkfs_ring_prep_poll_in(cmkfs_ring *ring, int fd, uint64_t user_data);
/// Submits what is queued and waits for at least one completion: >= 0, or a negative errno
/// (-EINTR included: the caller's retry rule decides).
int cmkfs_ring_submit_and_wait(cmkfs_ring *ring);
/// Takes the next completion, if any: 1 with `*user_data` and `*result` set, else 0.
int cmkfs_ring_next_completion(cmkfs_ring *ring, uint64_t *user_data, int32_t *result);

/// eventfd(0, EFD_CLOEXEC): a descriptor, or -1 with errno.
int cmkfs_eventfd(void);
/// The CPUs the kernel may ever run (get_nprocs_conf): FUSE over io_uring has a queue for each.
int cmkfs_possible_cpus(void);
/// Names the calling thread (at most 15 bytes show): 0, or a positive errno.
int cmkfs_name_current_thread(const char *name);

#endif
