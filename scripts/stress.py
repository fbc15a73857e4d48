#!/usr/bin/env python3
"""Random-operation stress test for a mounted cmkfs volume (works on any POSIX directory).

    stress.py --mount MNT --workers N --seconds S --seed SEED --state DIR     # run
    stress.py --verify --mount MNT --state DIR                               # re-check after a remount
    stress.py --replay SEED --worker K --ops N --mount MNT                   # one worker's sequence, alone

N worker processes, each with its own RNG (seeded from SEED and its index), each owning
MNT/stress-SEED/wK/{d0,d1,d2}: random create / write (offsets and lengths straddling 4 KiB
blocks, sparse writes past EOF) / read-and-verify (whole and partial) / truncate up and down /
rename (within a dir, across its dirs, over an existing name, onto another name of the same file)
/ unlink / link (the model keeps link groups: names map to inodes) / fsync / writes and reads
through descriptors held open across renames and the unlink of the last name. Every read and
every stat is checked against the model byte for byte. All workers also read shared read-only
files and append fixed-size tagged records (O_APPEND, one write each) to one shared file.

At the end each worker re-verifies all its files and saves its model under --state (names.json
plus one plain file per inode), so `--verify` can check everything again after a remount. Any
mismatch prints the seed, worker, op number, path, expected vs actual and the first differing
offset, plus the command that replays that worker, and the exit status is 1 (3 for a hang).
"""

import argparse
import errno
import hashlib
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import sys
import time
import zlib

BLOCK = 4096
SUBDIRS = 3
MAX_FILES = 18           # names per worker
MAX_SIZE = 768 * 1024    # the model keeps sizes under this (sparse writes stay below it)
MAX_HELD = 3             # descriptors a worker keeps open across operations
REC = 173                # shared append record size (not a divisor of 4096: records straddle blocks)
SHARED_SIZES = [1, 4095, 4097, 65536 + 17, 1024 * 1024 + 333]

OPS = ["create", "write", "read", "truncate", "rename", "unlink", "link", "fsync",
       "held_open", "held_write", "held_read", "held_close", "shared_read", "append", "stat"]
WEIGHTS = [6, 22, 20, 7, 8, 4, 5, 3, 3, 5, 5, 3, 5, 5, 4]


class Mismatch(Exception):
    pass


def first_diff(a, b):
    n = min(len(a), len(b))
    # Compare in chunks first (fast), then byte by byte inside the first differing chunk.
    step = 4096
    for i in range(0, n, step):
        if a[i:i + step] != b[i:i + step]:
            for j in range(i, min(i + step, n)):
                if a[j] != b[j]:
                    return j
    return n if len(a) != len(b) else -1


def describe_diff(expected, actual, base=0):
    off = first_diff(expected, actual)
    return (f"expected {len(expected)} bytes, got {len(actual)} bytes; first difference at offset {base + off}: "
            f"expected {bytes(expected[off:off + 16]).hex() or '(EOF)'} got {bytes(actual[off:off + 16]).hex() or '(EOF)'}")


def shared_content(seed, i):
    return random.Random(f"{seed}/shared/{i}").randbytes(SHARED_SIZES[i])


def record(seed, worker, seq):
    head = f"w{worker:03d} s{seq:09d} ".encode()
    body = hashlib.sha256(f"{seed}/{worker}/{seq}".encode()).hexdigest().encode()
    body = (body * 3)[:REC - len(head) - 10]
    crc = f"{zlib.crc32(head + body):08x}".encode()
    rec = head + body + b" " + crc + b"\n"
    assert len(rec) == REC
    return rec


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


def pread_full(fd, n, off):
    out = bytearray()
    while len(out) < n:
        chunk = os.pread(fd, n - len(out), off + len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def pwrite_full(fd, data, off):
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], off + done)


class Worker:
    def __init__(self, seed, index, root, corrupt=False, progress=None, no_sparse=False):
        self.seed, self.index, self.root = seed, index, root
        self.no_sparse = no_sparse
        self.rng = random.Random(f"{seed}/worker/{index}")
        self.dir = os.path.join(root, f"w{index}")
        self.names = {}        # relative path -> inode id
        self.inodes = {}       # inode id -> bytearray
        self.held = {}         # inode id -> fd (a descriptor kept open; the inode may have no name left)
        self.next_inode = 0
        self.next_name = 0
        self.appends = 0
        self.op = 0
        self.opname = ""
        self.path = ""
        self.corrupt = corrupt
        self.progress = progress
        self.stats = {k: [0, 0.0] for k in OPS}
        self.history = []

    # ---- model helpers
    def abspath(self, rel):
        return os.path.join(self.dir, rel)

    def names_of(self, ino):
        return sorted(n for n, i in self.names.items() if i == ino)

    def drop_if_dead(self, ino):
        if ino not in self.held and not any(i == ino for i in self.names.values()):
            del self.inodes[ino]

    def fail(self, what):
        raise Mismatch(what)

    def new_name(self):
        self.next_name += 1
        return f"d{self.rng.randrange(SUBDIRS)}/f{self.next_name}"

    def pick_offset(self, size):
        r = self.rng.random()
        if r < 0.35:   # near a block boundary inside or just past the file
            b = self.rng.randrange(0, size // BLOCK + 2)
            off = b * BLOCK + self.rng.randint(-3, 3)
        elif r < 0.75:
            off = self.rng.randrange(0, size + 1)
        elif r < 0.9:  # sparse: past EOF, skipping whole blocks
            off = size + self.rng.randrange(1, 5 * BLOCK)
        else:
            off = size + self.rng.randrange(BLOCK, 200 * 1024)
        if self.no_sparse:
            off = min(off, size)
        return max(0, min(off, MAX_SIZE - 1))

    def pick_length(self):
        r = self.rng.random()
        if r < 0.15:
            n = self.rng.randint(1, 16)
        elif r < 0.55:
            n = self.rng.choice([BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK - 1, 2 * BLOCK + 1]) + self.rng.randint(-2, 2)
        elif r < 0.9:
            n = self.rng.randint(1, 3 * BLOCK)
        else:
            n = self.rng.randint(3 * BLOCK, 160 * 1024)
        return max(1, n)

    def pick_size(self, size):
        r = self.rng.random()
        if r < 0.3:
            return 0 if self.rng.random() < 0.2 else self.rng.randrange(0, size + 1)
        if r < 0.6:
            return max(0, self.rng.randrange(0, size // BLOCK + 3) * BLOCK + self.rng.randint(-2, 2))
        return min(MAX_SIZE, size + self.rng.randrange(1, 40 * 1024))

    def model_write(self, ino, off, data):
        content = self.inodes[ino]
        end = off + len(data)
        if end > len(content):
            content.extend(b"\0" * (end - len(content)))
        content[off:end] = data

    def model_truncate(self, ino, size):
        content = self.inodes[ino]
        if size < len(content):
            del content[size:]
        else:
            content.extend(b"\0" * (size - len(content)))

    # ---- checks
    def check_bytes(self, ino, actual, off, n, via):
        expected = bytes(self.inodes[ino][off:off + n])
        if actual != expected:
            self.fail(f"read of {via} [{off}, +{n}) differs from the model (inode {ino}, names {self.names_of(ino)}): "
                      + describe_diff(expected, actual, off))

    def check_stat(self, rel):
        ino = self.names[rel]
        st = os.stat(self.abspath(rel))
        if st.st_size != len(self.inodes[ino]):
            self.fail(f"stat {rel}: size {st.st_size}, model {len(self.inodes[ino])}")
        want = len(self.names_of(ino))
        if st.st_nlink != want:
            self.fail(f"stat {rel}: nlink {st.st_nlink}, model {want} (names {self.names_of(ino)})")
        return st

    def verify_file(self, rel):
        ino = self.names[rel]
        actual = read_all(self.abspath(rel))
        self.check_bytes(ino, actual, 0, max(len(actual), len(self.inodes[ino])) + 1, rel)
        self.check_stat(rel)

    # ---- operations (each returns nothing; raises Mismatch or OSError)
    def op_create(self):
        if len(self.names) >= MAX_FILES:
            return self.op_unlink()
        rel = self.new_name()
        self.path = rel
        n = 0 if self.rng.random() < 0.25 else self.pick_length()
        data = self.rng.randbytes(n)
        fd = os.open(self.abspath(rel), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        try:
            pwrite_full(fd, data, 0)
        finally:
            os.close(fd)
        ino = self.next_inode
        self.next_inode += 1
        self.inodes[ino] = bytearray(data)
        self.names[rel] = ino

    def pick_name(self):
        return self.rng.choice(sorted(self.names)) if self.names else None

    def op_write(self):
        rel = self.pick_name()
        if rel is None:
            return self.op_create()
        self.path = rel
        ino = self.names[rel]
        off = self.pick_offset(len(self.inodes[ino]))
        data = self.rng.randbytes(min(self.pick_length(), MAX_SIZE - off))
        fd = os.open(self.abspath(rel), os.O_WRONLY)
        try:
            pwrite_full(fd, data, off)
        finally:
            os.close(fd)
        self.model_write(ino, off, data)

    def op_read(self):
        rel = self.pick_name()
        if rel is None:
            return self.op_create()
        self.path = rel
        ino = self.names[rel]
        if self.rng.random() < 0.4:
            return self.verify_file(rel)
        size = len(self.inodes[ino])
        off = self.pick_offset(size) if self.rng.random() < 0.8 else size + self.rng.randrange(0, 3 * BLOCK)
        n = self.pick_length()
        fd = os.open(self.abspath(rel), os.O_RDONLY)
        try:
            actual = pread_full(fd, n, off)
        finally:
            os.close(fd)
        self.check_bytes(ino, actual, off, n, rel)

    def op_truncate(self):
        rel = self.pick_name()
        if rel is None:
            return self.op_create()
        self.path = rel
        ino = self.names[rel]
        size = self.pick_size(len(self.inodes[ino]))
        if self.rng.random() < 0.5:
            os.truncate(self.abspath(rel), size)
        else:
            fd = os.open(self.abspath(rel), os.O_RDWR)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
        self.model_truncate(ino, size)

    def op_rename(self):
        src = self.pick_name()
        if src is None:
            return self.op_create()
        r = self.rng.random()
        if r < 0.35 and len(self.names) > 1:
            dst = self.rng.choice(sorted(n for n in self.names if n != src))      # over an existing name
        else:
            dst = self.new_name()                                                # new name, maybe another dir
            if r < 0.5:
                dst = os.path.dirname(src) + "/" + os.path.basename(dst)         # same dir
        self.path = f"{src} -> {dst}"
        os.rename(self.abspath(src), self.abspath(dst))
        s_ino = self.names[src]
        if self.names.get(dst) == s_ino:
            return   # two names of one file: POSIX rename does nothing, both names stay
        old = self.names.get(dst)
        del self.names[src]
        self.names[dst] = s_ino
        if old is not None:
            self.drop_if_dead(old)

    def op_unlink(self):
        rel = self.pick_name()
        if rel is None:
            return self.op_create()
        self.path = rel
        os.unlink(self.abspath(rel))
        ino = self.names.pop(rel)
        self.drop_if_dead(ino)

    def op_link(self):
        if len(self.names) >= MAX_FILES:
            return self.op_unlink()
        src = self.pick_name()
        if src is None:
            return self.op_create()
        dst = self.new_name()
        self.path = f"{src} => {dst}"
        os.link(self.abspath(src), self.abspath(dst))
        self.names[dst] = self.names[src]
        # Write through the new name and read through the old one right away.
        if self.rng.random() < 0.5:
            ino = self.names[src]
            off = self.pick_offset(len(self.inodes[ino]))
            data = self.rng.randbytes(min(self.rng.randint(1, 2 * BLOCK + 1), MAX_SIZE - off))
            fd = os.open(self.abspath(dst), os.O_WRONLY)
            try:
                pwrite_full(fd, data, off)
            finally:
                os.close(fd)
            self.model_write(ino, off, data)
            self.verify_file(src)

    def op_fsync(self):
        rel = self.pick_name()
        if rel is None:
            return self.op_create()
        self.path = rel
        ino = self.names[rel]
        off = self.pick_offset(len(self.inodes[ino]))
        data = self.rng.randbytes(min(self.pick_length(), MAX_SIZE - off))
        fd = os.open(self.abspath(rel), os.O_RDWR)
        try:
            pwrite_full(fd, data, off)
            self.model_write(ino, off, data)
            (os.fdatasync if self.rng.random() < 0.5 else os.fsync)(fd)
            n = min(len(data) + 2 * BLOCK, 64 * 1024)
            start = max(0, off - BLOCK)
            self.check_bytes(ino, pread_full(fd, n, start), start, n, f"{rel} (same fd after fsync)")
        finally:
            os.close(fd)

    def op_held_open(self):
        if len(self.held) >= MAX_HELD:
            return self.op_held_close()
        free = sorted(n for n, i in self.names.items() if i not in self.held)
        if not free:
            return self.op_create()
        rel = self.rng.choice(free)
        self.path = rel
        self.held[self.names[rel]] = os.open(self.abspath(rel), os.O_RDWR)

    def pick_held(self):
        return self.rng.choice(sorted(self.held)) if self.held else None

    def held_label(self, ino):
        names = self.names_of(ino)
        return f"fd of inode {ino} ({', '.join(names) if names else 'unlinked'})"

    def op_held_write(self):
        ino = self.pick_held()
        if ino is None:
            return self.op_held_open()
        self.path = self.held_label(ino)
        fd = self.held[ino]
        if self.rng.random() < 0.2:
            size = self.pick_size(len(self.inodes[ino]))
            os.ftruncate(fd, size)
            self.model_truncate(ino, size)
            return
        off = self.pick_offset(len(self.inodes[ino]))
        data = self.rng.randbytes(min(self.pick_length(), MAX_SIZE - off))
        pwrite_full(fd, data, off)
        self.model_write(ino, off, data)

    def op_held_read(self):
        ino = self.pick_held()
        if ino is None:
            return self.op_held_open()
        self.path = self.held_label(ino)
        fd = self.held[ino]
        size = len(self.inodes[ino])
        st = os.fstat(fd)
        if st.st_size != size:
            self.fail(f"fstat of {self.path}: size {st.st_size}, model {size}")
        if self.rng.random() < 0.3:
            n, off = size + 1, 0
        else:
            off, n = self.pick_offset(size), self.pick_length()
        self.check_bytes(ino, pread_full(fd, n, off), off, n, self.path)

    def op_held_close(self):
        ino = self.pick_held()
        if ino is None:
            return self.op_held_open()
        self.path = self.held_label(ino)
        os.close(self.held.pop(ino))
        self.drop_if_dead(ino)
        names = self.names_of(ino)
        if names:
            self.verify_file(self.rng.choice(names))

    def op_shared_read(self):
        i = self.rng.randrange(len(SHARED_SIZES))
        self.path = f"shared-{i}"
        path = os.path.join(self.root, self.path)
        expected = shared_content(self.seed, i) if i not in self.shared_cache else self.shared_cache[i]
        self.shared_cache[i] = expected
        if self.rng.random() < 0.3:
            actual = read_all(path)
            off, n = 0, len(expected) + 1
        else:
            off = self.rng.randrange(0, len(expected) + BLOCK)
            n = self.pick_length()
            fd = os.open(path, os.O_RDONLY)
            try:
                actual = pread_full(fd, n, off)
            finally:
                os.close(fd)
        if actual != expected[off:off + n]:
            self.fail(f"read of {self.path} [{off}, +{n}) differs: " + describe_diff(expected[off:off + n], actual, off))

    def op_append(self):
        self.path = "append.log"
        rec = record(self.seed, self.index, self.appends)
        fd = os.open(os.path.join(self.root, "append.log"), os.O_WRONLY | os.O_APPEND)
        try:
            n = os.write(fd, rec)
        finally:
            os.close(fd)
        if n != REC:
            self.fail(f"short append: {n} of {REC} bytes")
        self.appends += 1

    def op_stat(self):
        rel = self.pick_name()
        if rel is None:
            return self.op_create()
        self.path = rel
        st = self.check_stat(rel)
        for other in self.names_of(self.names[rel]):
            if os.stat(self.abspath(other)).st_ino != st.st_ino:
                self.fail(f"{rel} and {other} are one file in the model but have different st_ino")
        d = os.path.dirname(rel)
        want = sorted(os.path.basename(n) for n in self.names if os.path.dirname(n) == d)
        got = sorted(os.listdir(self.abspath(d)))
        if got != want:
            self.fail(f"listing of {d}: {got}, model {want}")

    # ---- driver
    def setup(self):
        os.makedirs(self.dir)
        for d in range(SUBDIRS):
            os.mkdir(os.path.join(self.dir, f"d{d}"))
        self.shared_cache = {}

    def step(self):
        name = self.rng.choices(OPS, WEIGHTS)[0]
        self.opname, self.path = name, ""
        t = time.perf_counter()
        getattr(self, "op_" + name)()
        s = self.stats[name]
        s[0] += 1
        s[1] += time.perf_counter() - t
        self.history.append(f"#{self.op} {name} {self.path}")
        if len(self.history) > 12:
            del self.history[0]
        if self.corrupt and self.op == 40:
            self.self_test_corrupt()

    def self_test_corrupt(self):
        """--self-test-corrupt: flip one byte of the model, then check that file as any read would."""
        named = sorted(rel for rel in self.names if len(self.inodes[self.names[rel]]) > 0)
        if named:
            self.corrupt = False
            self.opname, self.path = "self-test-corrupt", named[0]
            content = self.inodes[self.names[named[0]]]
            content[len(content) // 2] ^= 0x5A
            self.verify_file(named[0])

    def run(self, deadline=None, max_ops=None):
        self.setup()
        while (max_ops is None or self.op < max_ops) and (deadline is None or time.monotonic() < deadline):
            if self.progress is not None:
                self.progress[self.index] = self.op
            self.step()
            self.op += 1
        if self.corrupt:
            self.self_test_corrupt()
        self.opname, self.path = "final-verify", ""
        for ino in sorted(self.held):
            os.close(self.held.pop(ino))
            self.drop_if_dead(ino)
        for rel in sorted(self.names):
            self.path = rel
            self.verify_file(rel)
        for d in range(SUBDIRS):
            want = sorted(os.path.basename(n) for n in self.names if os.path.dirname(n) == f"d{d}")
            got = sorted(os.listdir(os.path.join(self.dir, f"d{d}")))
            if got != want:
                self.fail(f"listing of d{d}: {got}, model {want}")

    def report_failure(self, err, replay_hint):
        kind = "MISMATCH" if isinstance(err, Mismatch) else f"ERROR {type(err).__name__}"
        lines = [f"STRESS {kind}: seed={self.seed} worker={self.index} op={self.op} ({self.opname}) path={self.path}",
                 f"  {err}",
                 "  last operations: " + " | ".join(self.history[-8:]),
                 f"  replay: {replay_hint}"]
        print("\n".join(lines), file=sys.stderr, flush=True)

    def save(self, state):
        out = os.path.join(state, f"w{self.index}")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        for ino, content in self.inodes.items():
            with open(os.path.join(out, f"inode-{ino}"), "wb") as f:
                f.write(content)
        model = {"seed": self.seed, "worker": self.index, "dir": self.dir, "ops": self.op, "appends": self.appends,
                 "names": self.names,
                 "inodes": {str(i): hashlib.sha256(c).hexdigest() for i, c in self.inodes.items()},
                 "stats": self.stats}
        with open(os.path.join(out, "model.json"), "w") as f:
            json.dump(model, f, indent=1, sort_keys=True)


def replay_command(args, seed, worker, ops):
    extra = " --no-sparse" if args.no_sparse else ""
    return f"{sys.argv[0]} --replay {seed} --worker {worker} --ops {ops + 1} --mount {args.mount}{extra}"


def worker_main(args, seed, index, root, progress):
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    w = Worker(seed, index, root, corrupt=args.self_test_corrupt and index == 0, progress=progress,
               no_sparse=args.no_sparse)
    try:
        w.run(deadline=args.deadline)
        w.save(args.state)
    except (Mismatch, OSError) as err:
        w.report_failure(err, replay_command(args, seed, index, w.op))
        os._exit(1)
    os._exit(0)


def setup_root(root, seed):
    os.makedirs(root)
    for i in range(len(SHARED_SIZES)):
        with open(os.path.join(root, f"shared-{i}"), "wb") as f:
            f.write(shared_content(seed, i))
        os.chmod(os.path.join(root, f"shared-{i}"), 0o444)
    open(os.path.join(root, "append.log"), "wb").close()


def check_append(root, seed, counts):
    """Every record whole and in its worker's order; every worker's count as its model says."""
    data = read_all(os.path.join(root, "append.log"))
    problems = []
    if len(data) % REC:
        problems.append(f"append.log size {len(data)} is not a multiple of the record size {REC}")
    seen = {}
    for k in range(len(data) // REC):
        rec = data[k * REC:(k + 1) * REC]
        try:
            worker, seq = int(rec[1:4]), int(rec[6:15])
            ok = rec == record(seed, worker, seq)
        except ValueError:
            ok = False
        if not ok:
            problems.append(f"append.log record {k} at offset {k * REC} is torn or interleaved: {rec[:40]!r}...")
            break
        if seq != seen.get(worker, 0):
            problems.append(f"append.log record {k}: worker {worker} seq {seq}, expected {seen.get(worker, 0)}")
            break
        seen[worker] = seq + 1
    for worker, n in counts.items():
        if seen.get(worker, 0) != n:
            problems.append(f"append.log holds {seen.get(worker, 0)} records of worker {worker}, its model says {n}")
    return problems


def verify_saved(args):
    """--verify: check every saved model (every run under --state) against the mount."""
    problems, files = [], 0
    for run in sorted(os.listdir(args.state)):
        rundir = os.path.join(args.state, run)
        meta_path = os.path.join(rundir, "run.json")
        if not os.path.exists(meta_path):
            continue
        meta = json.load(open(meta_path))
        seed, root, counts = meta["seed"], meta["root"], {}
        for i in range(len(SHARED_SIZES)):
            if read_all(os.path.join(root, f"shared-{i}")) != shared_content(seed, i):
                problems.append(f"seed={seed}: shared-{i} differs")
        for wd in sorted(os.listdir(rundir)):
            if not wd.startswith("w"):
                continue
            model = json.load(open(os.path.join(rundir, wd, "model.json")))
            counts[model["worker"]] = model["appends"]
            groups = {}
            for rel, ino in sorted(model["names"].items()):
                files += 1
                path = os.path.join(model["dir"], rel)
                expected = read_all(os.path.join(rundir, wd, f"inode-{ino}"))
                try:
                    actual = read_all(path)
                    st = os.stat(path)
                except OSError as err:
                    problems.append(f"seed={seed} worker={model['worker']} path={path}: {err}")
                    continue
                if actual != expected:
                    problems.append(f"seed={seed} worker={model['worker']} path={path}: " + describe_diff(expected, actual))
                nl = sum(1 for i in model["names"].values() if i == ino)
                if st.st_nlink != nl:
                    problems.append(f"seed={seed} worker={model['worker']} path={path}: nlink {st.st_nlink}, model {nl}")
                groups.setdefault(ino, set()).add(st.st_ino)
            for ino, s in groups.items():
                if len(s) != 1:
                    problems.append(f"seed={seed} worker={model['worker']}: names of inode {ino} have st_ino {sorted(s)}")
            for d in range(SUBDIRS):
                want = sorted(os.path.basename(n) for n in model["names"] if os.path.dirname(n) == f"d{d}")
                got = sorted(os.listdir(os.path.join(model["dir"], f"d{d}")))
                if got != want:
                    problems.append(f"seed={seed} worker={model['worker']}: listing of d{d}: {got}, model {want}")
        problems += [f"seed={seed}: {p}" for p in check_append(root, seed, counts)]
    for p in problems:
        print(f"STRESS VERIFY MISMATCH: {p}", file=sys.stderr)
    print(f"stress verify: {files} names checked under {args.state}: {'FAILED' if problems else 'ok'}", flush=True)
    return 1 if problems else 0


def print_stats(stats, seconds, workers):
    total = sum(v[0] for v in stats.values())
    print(f"stress: {total} ops in {seconds:.1f} s with {workers} workers = {total / seconds:.0f} ops/s")
    print(f"  {'op':<13}{'count':>9}{'ops/s':>9}{'mean ms':>9}")
    for k in OPS:
        n, t = stats[k]
        if n:
            print(f"  {k:<13}{n:>9}{n / seconds:>9.1f}{1000 * t / n:>9.2f}")
    sys.stdout.flush()


def run(args):
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    root = os.path.join(args.mount, f"stress-{seed}")
    if os.path.exists(root):
        print(f"stress: {root} exists already; pick another seed", file=sys.stderr)
        return 2
    args.state = os.path.join(args.state_base, f"run-{seed}")
    os.makedirs(args.state)
    print(f"stress: seed={seed} workers={args.workers} seconds={args.seconds} root={root} state={args.state}", flush=True)
    setup_root(root, seed)
    with open(os.path.join(args.state, "run.json"), "w") as f:
        json.dump({"seed": seed, "root": root, "workers": args.workers}, f)
    ctx = mp.get_context("fork")
    progress = ctx.Array("l", args.workers, lock=False)
    start = time.monotonic()
    args.deadline = start + args.seconds
    procs = [ctx.Process(target=worker_main, args=(args, seed, i, root, progress)) for i in range(args.workers)]
    for p in procs:
        p.start()
    failed, hung = [], []
    for i, p in enumerate(procs):
        p.join(max(1, args.deadline + args.hang_seconds - time.monotonic()))
        if p.is_alive():
            hung.append(i)
        elif p.exitcode != 0:
            failed.append(i)
    elapsed = time.monotonic() - start
    if hung:
        for i in hung:
            print(f"STRESS HANG: seed={seed} worker={i} op={progress[i]} did not finish {args.hang_seconds} s after "
                  f"the deadline; replay: {replay_command(args, seed, i, progress[i])}", file=sys.stderr)
            procs[i].kill()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(3)   # not return: multiprocessing would join the hung workers at exit
    if failed:
        print(f"stress: FAILED seed={seed} (workers {failed})", file=sys.stderr)
        return 1
    stats = {k: [0, 0.0] for k in OPS}
    counts = {}
    for i in range(args.workers):
        model = json.load(open(os.path.join(args.state, f"w{i}", "model.json")))
        counts[i] = model["appends"]
        for k, (n, t) in model["stats"].items():
            stats[k][0] += n
            stats[k][1] += t
    problems = check_append(root, seed, counts)
    for p in problems:
        print(f"STRESS MISMATCH: seed={seed} {p}", file=sys.stderr)
    print_stats(stats, elapsed, args.workers)
    if problems:
        print(f"stress: FAILED seed={seed}", file=sys.stderr)
        return 1
    print(f"stress: ok seed={seed}", flush=True)
    return 0


def replay(args):
    seed, k = args.replay, args.worker
    root = os.path.join(args.mount, f"stress-replay-{seed}-w{k}-{os.getpid()}")
    setup_root(root, seed)
    w = Worker(seed, k, root, corrupt=args.self_test_corrupt and k == 0, no_sparse=args.no_sparse)
    print(f"stress replay: seed={seed} worker={k} ops={args.ops} root={root}", flush=True)
    start = time.monotonic()
    try:
        w.run(max_ops=args.ops)
        problems = check_append(root, seed, {k: w.appends})
        if problems:
            raise Mismatch("; ".join(problems))
    except (Mismatch, OSError) as err:
        w.report_failure(err, replay_command(args, seed, k, w.op))
        return 1
    print_stats(w.stats, time.monotonic() - start, 1)
    print(f"stress replay: ok seed={seed} worker={k} ops={w.op}", flush=True)
    if not args.keep:
        shutil.rmtree(root)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mount", required=True, help="the directory to stress (a cmkfs mountpoint)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, help="default: a random seed, printed")
    ap.add_argument("--state", dest="state_base", help="where models are saved (outside the mount); default a temp dir")
    ap.add_argument("--hang-seconds", type=float, default=120, help="a worker still busy this long after the deadline is a hang")
    ap.add_argument("--verify", action="store_true", help="re-check every model saved under --state against --mount")
    ap.add_argument("--replay", type=int, metavar="SEED", help="replay one worker's sequence alone")
    ap.add_argument("--worker", type=int, default=0)
    ap.add_argument("--ops", type=int, default=1000)
    ap.add_argument("--keep", action="store_true", help="replay: keep the files")
    ap.add_argument("--no-sparse", action="store_true",
                    help="never write past EOF (truncate still grows files): to get past the release-build "
                         "sparse-write crash while it is open; changes the sequences, so replay with it too")
    ap.add_argument("--self-test-corrupt", action="store_true",
                    help="flip a byte in worker 0's model: the run must then fail (tests the checker)")
    args = ap.parse_args()
    if args.replay is not None:
        return replay(args)
    if args.verify:
        if not args.state_base:
            ap.error("--verify needs --state")
        args.state = args.state_base
        return verify_saved(args)
    if not args.state_base:
        import tempfile
        args.state_base = tempfile.mkdtemp(prefix="cmkfs-stress-state-")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
