#!/usr/bin/env python3
"""POSIX behaviour as applications see it, printed as a canonical report.

Run as root against an empty directory on a reference filesystem (ext4) and against an empty
directory in a cmkfs mount: the two reports must be identical line for line (the integration
test `ConformanceTests` does exactly that). Every line is a fact an application could observe:
modes, owners, link counts, types, device numbers, sizes, error names and whether a time moved;
never inode numbers, block counts, directory sizes or absolute times.

    scripts/conformance.py DIR [--section NAME]...    # prints the report
    scripts/conformance.py --list                     # the section names

Sections that need a second user run their steps in a child process as `nobody` (uid/gid 65534)
inside a directory that user may write.
"""
import ctypes
import errno
import os
import socket
import stat
import sys

NOBODY = 65534
OTHER_GID = 4242
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
_libc = ctypes.CDLL(None, use_errno=True)
OUT = []


def say(*parts):
    OUT.append(" ".join(str(p) for p in parts))


def err(call):
    """Runs `call`; 'ok' or the errno's name."""
    try:
        call()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def renameat2(src, dst, flags):
    if _libc.renameat2(-100, src.encode(), -100, dst.encode(), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def kind(mode):
    return {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo",
            stat.S_IFSOCK: "socket", stat.S_IFCHR: "chr", stat.S_IFBLK: "blk"}.get(stat.S_IFMT(mode), "?")


def describe(path):
    """Type, permission bits, owner, link count (and rdev or size where they mean something)."""
    try:
        st = os.lstat(path)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    text = "%s %04o %d:%d n=%d" % (kind(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_nlink)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        text += " rdev=%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
    if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
        text += " size=%d" % st.st_size
    return text


def make(path, what, mode):
    """Creates `path` as `what` with `mode` (before the umask)."""
    if what == "file":
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode))
    elif what == "dir":
        os.mkdir(path, mode)
    elif what == "fifo":
        os.mkfifo(path, mode)
    elif what == "socket":
        os.mknod(path, stat.S_IFSOCK | mode)
    elif what == "mknod-file":
        os.mknod(path, stat.S_IFREG | mode)
    elif what == "chr":
        os.mknod(path, stat.S_IFCHR | mode, os.makedev(1, 3))
    elif what == "blk":
        os.mknod(path, stat.S_IFBLK | mode, os.makedev(7, 200))
    elif what == "symlink":
        os.symlink("target-of-" + os.path.basename(path), path)
    else:
        raise ValueError(what)


def as_nobody(body):
    """Runs `body()` in a child process as uid/gid 65534; its report lines come back."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            del OUT[:]
            body()
            os.write(w, ("\n".join(OUT) + "\n").encode())
            os._exit(0)
        except BaseException as e:  # report, never fall back into the parent's code
            os.write(w, ("child failed: %r\n" % (e,)).encode())
            os._exit(1)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    for line in data.decode().splitlines():
        if line:
            say("  [nobody]", line)
    say("  [nobody] exit", os.waitstatus_to_exitcode(status))


# --- sections ---------------------------------------------------------------------------------

def section_modes(d):
    """New entries get the mode asked for less the caller's umask, set-id bits included."""
    modes = [0o777, 0o666, 0o644, 0o620, 0o600, 0o4755, 0o2755, 0o6777, 0o1777, 0o7777, 0o000]
    for mask in [0o000, 0o022, 0o077, 0o027, 0o002, 0o777]:
        old = os.umask(mask)
        try:
            for what in ["file", "dir", "fifo", "socket", "mknod-file", "chr", "blk"]:
                for mode in modes:
                    p = os.path.join(d, "m-%03o-%s-%04o" % (mask, what, mode))
                    result = err(lambda: make(p, what, mode))
                    say("modes umask=%03o %s %04o:" % (mask, what, mode), result, describe(p))
            p = os.path.join(d, "m-%03o-symlink" % mask)
            say("modes umask=%03o symlink:" % mask, err(lambda: make(p, "symlink", 0)), describe(p))
        finally:
            os.umask(old)


def section_setgid_directories(d):
    """A set-group-ID directory gives new entries its group; new subdirectories inherit the bit."""
    sg = os.path.join(d, "sgid")
    os.mkdir(sg)
    os.chown(sg, 0, OTHER_GID)
    os.chmod(sg, 0o2777)
    say("setgid dir:", describe(sg))
    old = os.umask(0)
    try:
        for what in ["file", "dir", "fifo", "chr", "symlink"]:
            p = os.path.join(sg, "root-" + what)
            say("setgid root creates %s:" % what, err(lambda: make(p, what, 0o2775)), describe(p))
    finally:
        os.umask(old)

    def child():
        os.umask(0)
        for what in ["file", "dir", "fifo"]:
            p = os.path.join(sg, "nobody-" + what)
            say("setgid nobody creates %s:" % what, err(lambda: make(p, what, 0o2775)), describe(p))
    as_nobody(child)


def section_second_user(d):
    """A second user: owner of what it makes, EPERM for device nodes, set-id rules on chmod."""
    shared = os.path.join(d, "shared")
    os.mkdir(shared)
    os.chmod(shared, 0o1777)
    theirs = os.path.join(shared, "roots-file")
    make(theirs, "file", 0o666)

    def child():
        for mask in [0o000, 0o022, 0o077]:
            os.umask(mask)
            for what, mode in [("file", 0o777), ("file", 0o4755), ("file", 0o2755), ("dir", 0o777), ("fifo", 0o666),
                               ("socket", 0o644)]:
                p = os.path.join(shared, "u-%03o-%s-%04o" % (mask, what, mode))
                say("user umask=%03o %s %04o:" % (mask, what, mode), err(lambda: make(p, what, mode)), describe(p))
        os.umask(0o022)
        for what in ["chr", "blk"]:
            p = os.path.join(shared, "u-" + what)
            say("user mknod %s:" % what, err(lambda: make(p, what, 0o666)), describe(p))
        mine = os.path.join(shared, "u-000-file-0777")
        say("user chmod 2755 own file (own group):", err(lambda: os.chmod(mine, 0o2755)), describe(mine))
        say("user chown own file to root:", err(lambda: os.chown(mine, 0, -1)), describe(mine))
        say("user chgrp own file to other group:", err(lambda: os.chown(mine, -1, OTHER_GID)), describe(mine))
        say("user chmod root's file:", err(lambda: os.chmod(theirs, 0o600)), describe(theirs))
        say("user unlink root's file in sticky dir:", err(lambda: os.unlink(theirs)), describe(theirs))
        say("user rename root's file in sticky dir:", err(lambda: os.rename(theirs, theirs + ".x")), describe(theirs))
        say("user link to root's file:", err(lambda: os.link(theirs, os.path.join(shared, "u-link"))))
        f = os.path.join(shared, "u-setid")
        make(f, "file", 0o644)
        os.chmod(f, 0o6755)
        say("user write clears set-id:", describe(f), end_write(f), describe(f))
        # Every change of content by a caller without CAP_FSETID takes the set-id bits, not only
        # write(2): an open with O_TRUNC, ftruncate, truncate and fallocate too.
        for how, change in [("O_TRUNC", lambda p: os.close(os.open(p, os.O_WRONLY | os.O_TRUNC))),
                            ("ftruncate", lambda p: with_fd(p, lambda fd: os.ftruncate(fd, 1))),
                            ("truncate", lambda p: os.truncate(p, 2)),
                            ("fallocate", lambda p: with_fd(p, lambda fd: os.posix_fallocate(fd, 0, 8192)))]:
            f = os.path.join(shared, "u-setid-" + how)
            make(f, "file", 0o644)
            os.chmod(f, 0o6775)
            say("user %s clears set-id:" % how, describe(f), err(lambda: change(f)), describe(f))
        f = os.path.join(shared, "u-setid-chown")
        make(f, "file", 0o644)
        os.chmod(f, 0o6775)
        say("user chown -1 -1 of own file clears set-id:", err(lambda: os.chown(f, -1, -1)), describe(f))
    as_nobody(child)
    # Root chowns a set-id file: the bits go (chown(2) clears them for non-directories).
    f = os.path.join(d, "root-setid")
    make(f, "file", 0o644)
    os.chmod(f, 0o6755)
    say("root chmod 6755:", describe(f))
    os.chown(f, NOBODY, NOBODY)
    say("root chown clears set-id:", describe(f))
    os.chmod(f, 0o6755)
    os.chown(f, -1, -1)
    say("root chown -1 -1 clears set-id:", describe(f))


def with_fd(path, body):
    fd = os.open(path, os.O_RDWR)
    try:
        body(fd)
    finally:
        os.close(fd)


def end_write(path):
    with open(path, "ab") as f:
        f.write(b"x")
    return "wrote"


def times(path):
    st = os.lstat(path)
    return st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns


PAST = 1_000_000_000  # 2001-09-09, well before any real change


def moved(before, after):
    names = ["atime", "mtime", "ctime"]
    return ",".join(n for n, b, a in zip(names, before, after) if b != a) or "none"


def age(*paths):
    """Sets atime and mtime far in the past; ctime cannot be set, so it is read back instead."""
    for p in paths:
        os.utime(p, ns=(PAST, PAST), follow_symlinks=False)


def section_times(d):
    """Which times each operation changes, on the entry and on its directory."""
    a = os.path.join(d, "ta")
    b = os.path.join(d, "tb")
    os.mkdir(a)
    os.mkdir(b)
    f = os.path.join(a, "f")
    make(f, "file", 0o644)

    def step(label, action, *paths):
        age(*paths)
        before = [times(p) for p in paths]
        r = err(action)
        after = [times(p) if os.path.lexists(p) else before[i] for i, p in enumerate(paths)]
        say("times %s:" % label, r, " ".join("%s=%s" % (os.path.basename(p), moved(x, y))
                                              for p, x, y in zip(paths, before, after)))

    step("write", lambda: end_write(f), f, a)
    step("truncate", lambda: os.truncate(f, 0), f, a)
    step("chmod", lambda: os.chmod(f, 0o600), f, a)
    step("chown", lambda: os.chown(f, NOBODY, -1), f, a)
    step("utime", lambda: os.utime(f, ns=(PAST + 5, PAST + 7)), f)
    say("times utime values:", times(f)[:2] == (PAST + 5, PAST + 7))
    g = os.path.join(a, "g")
    step("create", lambda: make(g, "file", 0o644), a)
    step("link", lambda: os.link(f, os.path.join(a, "f2")), f, a)
    step("rename within", lambda: os.rename(g, os.path.join(a, "g2")), a)
    step("rename across", lambda: os.rename(os.path.join(a, "g2"), os.path.join(b, "g3")), a, b)
    step("unlink", lambda: os.unlink(os.path.join(b, "g3")), b)
    step("mkdir", lambda: os.mkdir(os.path.join(a, "sub")), a)
    step("rmdir", lambda: os.rmdir(os.path.join(a, "sub")), a)
    step("symlink", lambda: os.symlink("x", os.path.join(a, "s")), a)
    step("mknod fifo", lambda: os.mkfifo(os.path.join(a, "p")), a)
    step("unlink one of two links", lambda: os.unlink(os.path.join(a, "f2")), f, a)


def section_rename(d):
    """rename(2) and renameat2(2) over every kind of target."""
    def fresh(name, what):
        p = os.path.join(d, name)
        if what == "file":
            with open(p, "w") as f:
                f.write(name)
        elif what == "dir":
            os.mkdir(p)
        elif what == "full":
            os.mkdir(p)
            with open(os.path.join(p, "inside"), "w") as f:
                f.write("x")
        elif what == "symlink":
            os.symlink("somewhere-" + name, p)
        elif what == "fifo":
            os.mkfifo(p)
        return p

    kinds = ["file", "dir", "full", "symlink", "fifo"]
    for src_kind in ["file", "dir", "symlink", "fifo"]:
        for dst_kind in kinds + ["none"]:
            for label, flags in [("rename", None), ("noreplace", RENAME_NOREPLACE), ("exchange", RENAME_EXCHANGE)]:
                tag = "%s-%s-%s" % (src_kind, dst_kind, label)
                s = fresh("rs-" + tag, src_kind)
                t = os.path.join(d, "rt-" + tag) if dst_kind == "none" else fresh("rt-" + tag, dst_kind)
                r = err(lambda: os.rename(s, t) if flags is None else renameat2(s, t, flags))
                inside = os.path.join(t, "inside")
                say("rename %s -> %s (%s):" % (src_kind, dst_kind, label), r, "| src:", describe(s), "| dst:", describe(t),
                    "| dst/inside:", describe(inside) if os.path.isdir(t) else "-")
    # A directory into itself, onto its parent, the same file under two names, a dir onto a file.
    top = fresh("rtop", "dir")
    sub = os.path.join(top, "sub")
    os.mkdir(sub)
    say("rename dir into its own subdir:", err(lambda: os.rename(top, os.path.join(sub, "x"))))
    say("rename dir onto its non-empty parent:", err(lambda: os.rename(sub, top)))
    say("rename onto itself:", err(lambda: os.rename(top, top)), describe(top))
    one = fresh("rsame", "file")
    two = os.path.join(d, "rsame2")
    os.link(one, two)
    say("rename hard link onto its twin:", err(lambda: os.rename(one, two)), describe(one), describe(two))
    say("rename missing:", err(lambda: os.rename(os.path.join(d, "nothing"), os.path.join(d, "else"))))
    # An emptied directory (its entries removed) is empty again.
    full = fresh("rfull", "full")
    os.unlink(os.path.join(full, "inside"))
    mover = fresh("rmover", "dir")
    with open(os.path.join(mover, "keep"), "w") as f:
        f.write("kept")
    say("rename dir onto emptied dir:", err(lambda: os.rename(mover, full)), describe(mover), describe(full),
        open(os.path.join(full, "keep")).read() if os.path.exists(os.path.join(full, "keep")) else "lost")
    say("listing after:", sorted(os.listdir(full)))


def section_links(d):
    """Hard links to every kind of entry (directories refused)."""
    old = os.umask(0)
    try:
        for what in ["file", "fifo", "socket", "chr", "blk", "symlink", "dir"]:
            p = os.path.join(d, "l-" + what)
            make(p, what, 0o640)
            q = os.path.join(d, "l2-" + what)
            r = err(lambda: os.link(p, q, follow_symlinks=False))
            same = os.path.lexists(q) and os.lstat(p).st_ino == os.lstat(q).st_ino
            say("link %s:" % what, r, describe(p), "| twin:", describe(q), "| same inode:", same)
            if r == "ok":
                os.chmod(q, 0o604) if what != "symlink" else None
                say("  chmod through the twin:", describe(p))
                os.chown(q, NOBODY, OTHER_GID, follow_symlinks=False)
                say("  chown through the twin:", describe(p))
                os.unlink(p)
                say("  unlink the first:", describe(p), "| twin:", describe(q))
    finally:
        os.umask(old)
    f = os.path.join(d, "l-content")
    with open(f, "w") as fh:
        fh.write("shared content")
    os.link(f, f + "-2")
    with open(f + "-2", "a") as fh:
        fh.write(" grows")
    say("link content shows through:", open(f).read())


def section_devices(d):
    """Device nodes as root: kept with type, numbers, mode and owner; never opened (the mount is nodev)."""
    old = os.umask(0)
    try:
        for what, major, minor in [("chr", 1, 3), ("chr", 4, 64), ("blk", 7, 0), ("blk", 259, 1048575), ("chr", 4095, 5)]:
            p = os.path.join(d, "dev-%s-%d-%d" % (what, major, minor))
            flag = stat.S_IFCHR if what == "chr" else stat.S_IFBLK
            r = err(lambda: os.mknod(p, flag | 0o660, os.makedev(major, minor)))
            say("mknod %s %d,%d:" % (what, major, minor), r, describe(p))
        p = os.path.join(d, "dev-chr-1-3")
        say("chmod device:", err(lambda: os.chmod(p, 0o604)), describe(p))
        say("chown device:", err(lambda: os.chown(p, NOBODY, OTHER_GID)), describe(p))
        say("rename device:", err(lambda: os.rename(p, p + "-moved")), describe(p + "-moved"))
        say("mknod over existing:", err(lambda: os.mknod(p + "-moved", stat.S_IFCHR | 0o600, os.makedev(1, 5))))
        say("unlink device:", err(lambda: os.unlink(p + "-moved")), describe(p + "-moved"))
        say("mknod whiteout-like 0,0:", err(lambda: os.mknod(os.path.join(d, "dev00"), stat.S_IFCHR | 0o600, 0)),
            describe(os.path.join(d, "dev00")))
    finally:
        os.umask(old)


def section_symlinks(d):
    """Symlink targets of every length from 1 to 4,095 bytes round-trip exactly; 4,096 is refused."""
    base = os.path.join(d, "links")
    os.mkdir(base)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789._-/é"
    bad = []
    for n in range(1, 4096):
        # Deterministic, mixed content: path separators and a two-byte UTF-8 letter.
        chars, size, i = [], 0, n
        while size < n:
            c = alphabet[(i * 7 + size) % len(alphabet)]
            if size + len(c.encode()) > n:
                c = "x"
            chars.append(c)
            size += len(c.encode())
            i += 1
        target = "".join(chars)
        p = os.path.join(base, "s%d" % n)
        try:
            os.symlink(target, p)
            back = os.readlink(p)
            size = os.lstat(p).st_size
            if back != target or size != n:
                bad.append("%d: readlink %d bytes, lstat %d" % (n, len(back.encode()), size))
        except OSError as e:
            bad.append("%d: %s" % (n, errno.errorcode.get(e.errno)))
    say("symlink lengths 1..4095 wrong:", len(bad), bad[:5])
    say("symlink 4096:", err(lambda: os.symlink("y" * 4096, os.path.join(base, "too-long"))))
    long_one = os.path.join(base, "s4095")
    os.rename(long_one, long_one + "-renamed")
    os.link(long_one + "-renamed", long_one + "-linked", follow_symlinks=False)
    os.unlink(long_one + "-renamed")
    say("long symlink after rename, link, unlink:", describe(long_one + "-linked"),
        len(os.readlink(long_one + "-linked")))
    removed = 0
    for n in range(1, 4095):
        os.unlink(os.path.join(base, "s%d" % n))
        removed += 1
    say("symlinks removed:", removed, sorted(os.listdir(base)))


def section_special_files(d):
    """FIFOs and sockets: made by mknod, mkfifo and bind; they work as FIFOs and sockets."""
    fifo = os.path.join(d, "fifo")
    os.mkfifo(fifo, 0o600)
    pid = os.fork()
    if pid == 0:
        with open(fifo, "w") as f:
            f.write("through the fifo")
        os._exit(0)
    with open(fifo) as f:
        say("fifo carries data:", f.read())
    os.waitpid(pid, 0)
    sock_path = os.path.join(d, "sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    r = err(lambda: s.bind(sock_path))
    say("bind unix socket:", r, describe(sock_path).split(" ")[0])
    s.close()


def section_files(d):
    """open(2) flags and file I/O as applications use them."""
    f = os.path.join(d, "f")
    say("O_EXCL new:", err(lambda: os.close(os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))))
    say("O_EXCL existing:", err(lambda: os.close(os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))))
    say("O_CREAT on a directory:", err(lambda: os.close(os.open(d, os.O_CREAT | os.O_WRONLY, 0o644))))
    say("open a directory for writing:", err(lambda: os.close(os.open(d, os.O_WRONLY))))
    say("O_DIRECTORY on a file:", err(lambda: os.close(os.open(f, os.O_RDONLY | os.O_DIRECTORY))))
    say("missing without O_CREAT:", err(lambda: os.close(os.open(os.path.join(d, "none"), os.O_RDONLY))))
    say("through a file as a directory:", err(lambda: os.close(os.open(os.path.join(f, "x"), os.O_RDONLY))))
    fd = os.open(f, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"one")
    os.pwrite(fd, b"two", 0)   # Linux appends whatever the offset with O_APPEND
    os.close(fd)
    say("O_APPEND with pwrite:", open(f, "rb").read())
    fd = os.open(f, os.O_RDONLY | os.O_TRUNC)
    os.close(fd)
    say("O_RDONLY|O_TRUNC:", describe(f))
    with open(f, "wb") as h:
        h.write(b"abc")
    fd = os.open(f, os.O_RDONLY)
    say("ftruncate read-only fd:", err(lambda: os.ftruncate(fd, 0)))
    say("write read-only fd:", err(lambda: os.write(fd, b"x")))
    os.close(fd)
    fd = os.open(f, os.O_RDWR)
    os.pwrite(fd, b"Z", 10000)
    say("write past the end:", os.fstat(fd).st_size, os.pread(fd, 20, 0) == b"abc" + bytes(17), os.pread(fd, 5, 9998))
    os.ftruncate(fd, 5)
    say("shrink:", os.fstat(fd).st_size, os.pread(fd, 10, 0))
    os.ftruncate(fd, 8192)
    say("grow reads zeros:", os.pread(fd, 16, 4090) == bytes(16), os.fstat(fd).st_size)
    os.unlink(f)
    os.pwrite(fd, b"after unlink", 0)
    say("unlinked but open:", os.fstat(fd).st_nlink, os.pread(fd, 12, 0))
    os.close(fd)
    g = os.path.join(d, "g")
    with open(g, "wb") as h:
        h.write(b"renamed while open")
    fd = os.open(g, os.O_RDONLY)
    os.rename(g, g + "2")
    say("renamed while open:", os.pread(fd, 40, 0), os.path.exists(g))
    os.close(fd)
    say("read a directory:", err(lambda: os.read(os.open(d, os.O_RDONLY), 10)))
    s = os.path.join(d, "s")
    os.symlink("g2", s)
    os.chmod(s, 0o600)   # follows the link
    say("chmod through a symlink:", describe(g + "2"), describe(s).split(" n=")[0])
    os.utime(s, ns=(PAST, PAST), follow_symlinks=False)
    say("utime of the symlink itself:", times(s)[:2] == (PAST, PAST), times(g + "2")[:2] != (PAST, PAST))
    say("access:", os.access(g + "2", os.R_OK), os.access(g + "2", os.X_OK))
    say("readlink of a file:", err(lambda: os.readlink(g + "2")))
    big = os.path.join(d, "dir-of-many")
    os.mkdir(big)
    for i in range(300):
        open(os.path.join(big, "e%03d" % i), "w").close()
    with os.scandir(big) as it:
        say("listing of 300:", len(list(it)), sorted(os.listdir(big))[:2], sorted(os.listdir(big))[-1])
    say("rmdir non-empty:", err(lambda: os.rmdir(big)), "rmdir file:", err(lambda: os.rmdir(g + "2")))
    say("unlink a directory:", err(lambda: os.unlink(big)))


SECTIONS = {name[len("section_"):]: fn for name, fn in globals().items() if name.startswith("section_")}


def main(argv):
    if "--list" in argv:
        print("\n".join(SECTIONS))
        return 0
    root = argv[1]
    chosen = [argv[i + 1] for i, a in enumerate(argv) if a == "--section"] or list(SECTIONS)
    os.chmod(root, 0o755)
    for name in chosen:
        d = os.path.join(root, name)
        os.mkdir(d)
        os.chmod(d, 0o777)
        say("== %s" % name)
        try:
            SECTIONS[name](d)
        except Exception as e:  # a crash is a difference too, printed where it happened
            say("section %s crashed: %r" % (name, e))
    sys.stdout.write("\n".join(OUT) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
