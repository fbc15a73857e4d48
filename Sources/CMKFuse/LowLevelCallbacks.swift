import Glibc
import CFuse3

/// The libfuse low-level operations table. Each entry is a non-capturing closure that finds the
/// `FileSystem` through `fuse_req_userdata`, calls it, and sends exactly one reply.
///
/// Defined here, not in `main.swift`: closures in top-level code are main-actor isolated and
/// trap when a FUSE worker thread calls them.
enum LowLevelCallbacks {
    typealias Req = fuse_req_t

    static func fs(_ req: Req?) -> FileSystem {
        Unmanaged<FileSystem>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
    }

    static func caller(_ req: Req?) -> FileSystem.Caller {
        guard let ctx = fuse_req_ctx(req) else { return .init(uid: 0, gid: 0) }
        return .init(uid: ctx.pointee.uid, gid: ctx.pointee.gid, pid: ctx.pointee.pid)
    }

    /// A name or symlink target from the kernel. Names are UTF-8 here: bytes that are not
    /// become `invalidName`, which every name operation refuses with EILSEQ — decoding them
    /// with replacement characters would give two different names one backing entry (one
    /// file overwriting another).
    static func name(_ p: UnsafePointer<CChar>?) -> String { String(validatingCString: p!) ?? invalidName }

    /// Stands for a name that is not UTF-8: a NUL, which no name from the kernel can hold.
    static let invalidName = "\u{0}"

    /// Runs `body` with `node` opened for this request, or replies ESTALE for a node the table
    /// has dropped or whose backing object is gone.
    static func with(_ req: Req?, _ node: fuse_ino_t, preferOpenFile: Bool = false, _ body: (FileSystem, Node) -> Void) {
        let f = fs(req)
        // Only the node's own failure (ESTALE) is caught here: `body` replies for itself.
        do throws(FSError) { try f.withNode(node, preferOpenFile: preferOpenFile) { n throws(FSError) in body(f, n) } } catch { fuse_reply_err(req, error.errno) }
    }

    // The replies: the one place a failure becomes an errno (`FSError.errno`).

    /// Replies 0 when `body` returns, else its failure's errno (operations with no value).
    static func replyStatus(_ req: Req?, _ body: () throws(FSError) -> Void) {
        do throws(FSError) { try body(); fuse_reply_err(req, 0) } catch { fuse_reply_err(req, error.errno) }
    }

    static func replyEntry(_ req: Req?, _ body: () throws(FSError) -> fuse_entry_param) {
        do throws(FSError) {
            var e = try body()
            fuse_reply_entry(req, &e)
        } catch { fuse_reply_err(req, error.errno) }
    }

    static func replyAttr(_ req: Req?, _ body: () throws(FSError) -> stat) {
        do throws(FSError) {
            var st = try body()
            fuse_reply_attr(req, &st, FileSystem.cacheSeconds)
        } catch { fuse_reply_err(req, error.errno) }
    }

    static func replyXattr(_ req: Req?, _ size: Int, _ body: () throws(FSError) -> (bytes: [UInt8], length: Int)) {
        do throws(FSError) {
            let (bytes, length) = try body()
            if size == 0 { fuse_reply_xattr(req, length) }
            else { bytes.withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), length) } }
        } catch { fuse_reply_err(req, error.errno) }
    }

    static func operations() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { userdata, conn in
            guard let conn else { return }
            if let userdata, Unmanaged<FileSystem>.fromOpaque(userdata).takeUnretainedValue().writebackCache {
                conn.pointee.want |= UInt32(FUSE_CAP_WRITEBACK_CACHE)
            }
            conn.pointee.max_write = 1 << 20
            conn.pointee.max_readahead = 1 << 20
            conn.pointee.want |= UInt32(FUSE_CAP_ATOMIC_O_TRUNC)
            // Every listing reply carries its entries (readdirplus), not only a directory's first:
            // a walker that reads the whole listing and then opens each name (Python, Go,
            // rsync) otherwise sends a LOOKUP for nine entries in ten. design-notes.md "Kernel caches".
            conn.pointee.want &= ~UInt32(FUSE_CAP_READDIRPLUS_AUTO)
            // Splice copies made reads slower here and gain nothing for ciphertext.
            conn.pointee.want &= ~UInt32(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE)
        }
        ops.lookup = { req, parent, name in
            LowLevelCallbacks.with(req, parent) { f, dir in
                LowLevelCallbacks.replyEntry(req) { () throws(FSError) in try f.lookup(dir, LowLevelCallbacks.name(name)) }
            }
        }
        ops.forget = { req, node, count in
            LowLevelCallbacks.fs(req).inodes.forget(node, count: count)
            fuse_reply_none(req)
        }
        ops.forget_multi = { req, count, forgets in
            let f = LowLevelCallbacks.fs(req)
            for i in 0..<count { f.inodes.forget(forgets![i].ino, count: forgets![i].nlookup) }
            fuse_reply_none(req)
        }
        ops.getattr = { req, node, _ in
            LowLevelCallbacks.with(req, node) { f, inode in LowLevelCallbacks.replyAttr(req) { () throws(FSError) in try f.getattr(inode) } }
        }
        ops.setattr = { req, node, attr, toSet, fi in
            LowLevelCallbacks.with(req, node, preferOpenFile: true) { f, inode in
                LowLevelCallbacks.replyAttr(req) { () throws(FSError) in
                    try f.setattr(inode, attr!.pointee, toSet: toSet, fh: fi?.pointee.fh, caller: LowLevelCallbacks.caller(req))
                }
            }
        }
        ops.readlink = { req, node in
            LowLevelCallbacks.with(req, node) { f, inode in
                do throws(FSError) { fuse_reply_readlink(req, try f.readlink(inode)) } catch { fuse_reply_err(req, error.errno) }
            }
        }
        ops.mknod = { req, parent, name, mode, rdev in
            LowLevelCallbacks.with(req, parent) { f, dir in
                let name = LowLevelCallbacks.name(name)
                LowLevelCallbacks.replyEntry(req) { () throws(FSError) in
                    try f.noting(dir, name, entry: { $0 }) { () throws(FSError) in
                        try f.mknod(dir, name, mode: mode, rdev: rdev, caller: LowLevelCallbacks.caller(req))
                    }
                }
            }
        }
        ops.mkdir = { req, parent, name, mode in
            LowLevelCallbacks.with(req, parent) { f, dir in
                let name = LowLevelCallbacks.name(name)
                LowLevelCallbacks.replyEntry(req) { () throws(FSError) in
                    try f.noting(dir, name, entry: { $0 }) { () throws(FSError) in
                        try f.mkdir(dir, name, mode: mode, caller: LowLevelCallbacks.caller(req))
                    }
                }
            }
        }
        ops.unlink = { req, parent, name in
            LowLevelCallbacks.with(req, parent) { f, dir in
                LowLevelCallbacks.replyStatus(req) { () throws(FSError) in try f.unlink(dir, LowLevelCallbacks.name(name)) }
            }
        }
        ops.rmdir = { req, parent, name in
            LowLevelCallbacks.with(req, parent) { f, dir in
                LowLevelCallbacks.replyStatus(req) { () throws(FSError) in try f.rmdir(dir, LowLevelCallbacks.name(name)) }
            }
        }
        ops.symlink = { req, target, parent, name in
            LowLevelCallbacks.with(req, parent) { f, dir in
                let name = LowLevelCallbacks.name(name)
                LowLevelCallbacks.replyEntry(req) { () throws(FSError) in
                    try f.noting(dir, name, entry: { $0 }) { () throws(FSError) in
                        try f.symlink(target: LowLevelCallbacks.name(target), dir, name, caller: LowLevelCallbacks.caller(req))
                    }
                }
            }
        }
        ops.rename = { req, parent, name, newParent, newName, flags in
            LowLevelCallbacks.with(req, parent) { f, dir in
                LowLevelCallbacks.replyStatus(req) { () throws(FSError) in
                    try f.withNode(newParent) { newDir throws(FSError) in
                        try f.rename(dir, LowLevelCallbacks.name(name), newDir, LowLevelCallbacks.name(newName), flags: flags)
                    }
                }
            }
        }
        ops.link = { req, node, newParent, newName in
            LowLevelCallbacks.with(req, node) { f, inode in
                LowLevelCallbacks.replyEntry(req) { () throws(FSError) in
                    try f.withNode(newParent) { newDir throws(FSError) in try f.link(inode, newDir, LowLevelCallbacks.name(newName)) }
                }
            }
        }
        ops.open = { req, node, fi in
            // No `with`: the open makes its own descriptor of the node (`FileSystem.open(node:)`).
            let f = LowLevelCallbacks.fs(req)
            let handle: UInt64
            do throws(FSError) { handle = try f.open(node: node, flags: fi!.pointee.flags, caller: LowLevelCallbacks.caller(req)) } catch {
                fuse_reply_err(req, error.errno)
                return
            }
            fi!.pointee.fh = handle
            // Nothing is buffered in the daemon, so close(2) needs no FLUSH round trip.
            fi!.pointee.noflush = 1
            if fuse_reply_open(req, fi) != 0 { try? f.release(handle) }
        }
        ops.create = { req, parent, name, mode, fi in
            LowLevelCallbacks.with(req, parent) { f, dir in
                var e: fuse_entry_param, handle: UInt64
                do throws(FSError) {
                    let name = LowLevelCallbacks.name(name)
                    (e, handle) = try f.noting(dir, name, entry: { $0.0 }) { () throws(FSError) in
                        try f.create(dir, name, mode: mode, flags: fi!.pointee.flags, caller: LowLevelCallbacks.caller(req))
                    }
                } catch {
                    fuse_reply_err(req, error.errno)
                    return
                }
                fi!.pointee.fh = handle
                fi!.pointee.noflush = 1
                if fuse_reply_create(req, &e, fi) != 0 { try? f.release(handle) }
            }
        }
        ops.read = { req, _, size, offset, fi in
            do throws(FSError) {
                try LowLevelCallbacks.fs(req).read(fi!.pointee.fh, size: size, at: Int(offset)) { data in
                    _ = fuse_reply_buf(req, data.baseAddress?.assumingMemoryBound(to: CChar.self), data.count)
                }
            } catch { fuse_reply_err(req, error.errno) }
        }
        ops.write = { req, _, buf, size, offset, fi in
            do throws(FSError) {
                fuse_reply_write(req, try LowLevelCallbacks.fs(req).write(fi!.pointee.fh, UnsafeRawBufferPointer(start: buf, count: size), at: Int(offset)))
            } catch { fuse_reply_err(req, error.errno) }
        }
        ops.flush = { req, _, _ in fuse_reply_err(req, 0) }
        ops.release = { req, _, fi in
            LowLevelCallbacks.replyStatus(req) { () throws(FSError) in try LowLevelCallbacks.fs(req).release(fi!.pointee.fh) }
        }
        ops.fsync = { req, _, datasync, fi in
            LowLevelCallbacks.replyStatus(req) { () throws(FSError) in
                try LowLevelCallbacks.fs(req).fsync(fi!.pointee.fh, dataOnly: datasync != 0)
            }
        }
        ops.opendir = { req, node, fi in
            LowLevelCallbacks.with(req, node) { f, inode in
                let handle: UInt64
                do throws(FSError) { handle = try f.opendir(inode) } catch {
                    fuse_reply_err(req, error.errno)
                    return
                }
                fi!.pointee.fh = handle
                if fuse_reply_open(req, fi) != 0 { f.releasedir(handle) }
            }
        }
        ops.readdir = { req, _, size, offset, fi in
            let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
            defer { buffer.deallocate() }
            var used = 0
            do throws(FSError) {
                try LowLevelCallbacks.fs(req).readdir(fi!.pointee.fh, offset: Int(offset)) { name, st, next in
                    var st = st
                    let need = fuse_add_direntry(req, buffer + used, size - used, name, &st, off_t(next))
                    guard need <= size - used else { return false }
                    used += need
                    return true
                }
                fuse_reply_buf(req, buffer, used)
            } catch { fuse_reply_err(req, error.errno) }
        }
        ops.readdirplus = { req, node, size, offset, fi in
            LowLevelCallbacks.with(req, node) { f, dir in
                let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
                defer { buffer.deallocate() }
                var used = 0
                do throws(FSError) {
                    try f.readdirplus(fi!.pointee.fh, dir, offset: Int(offset)) { name, e, next in
                        var e = e
                        let need = fuse_add_direntry_plus(req, buffer + used, size - used, name, &e, off_t(next))
                        guard need <= size - used else { return false }
                        used += need
                        return true
                    }
                    fuse_reply_buf(req, buffer, used)
                } catch { fuse_reply_err(req, error.errno) }
            }
        }
        ops.releasedir = { req, _, fi in
            LowLevelCallbacks.fs(req).releasedir(fi!.pointee.fh)
            fuse_reply_err(req, 0)
        }
        ops.fsyncdir = { req, _, _, _ in fuse_reply_err(req, 0) }
        ops.statfs = { req, node in
            LowLevelCallbacks.with(req, node) { f, inode in
                do throws(FSError) {
                    var st = try f.statfs(inode)
                    fuse_reply_statfs(req, &st)
                } catch { fuse_reply_err(req, error.errno) }
            }
        }
        ops.setxattr = { req, node, name, value, size, flags in
            LowLevelCallbacks.with(req, node) { f, inode in
                LowLevelCallbacks.replyStatus(req) { () throws(FSError) in
                    try f.setxattr(inode, name: LowLevelCallbacks.name(name), value: UnsafeRawBufferPointer(start: value, count: size), flags: flags,
                                   caller: LowLevelCallbacks.caller(req))
                }
            }
        }
        ops.getxattr = { req, node, name, size in
            // Only user.* names can exist here, so the rest are answered without opening the inode
            // (the kernel asks for security.capability before every write). ENOTSUP, not ENODATA:
            // "this filesystem has no such namespace", which `ls -l` remembers for the whole
            // filesystem, where ENODATA made it ask for security.selinux and
            // system.posix_acl_access again for every file it lists (two requests per file).
            guard let name, strncmp(name, "user.", 5) == 0 else { fuse_reply_err(req, ENOTSUP); return }
            LowLevelCallbacks.with(req, node) { f, inode in
                LowLevelCallbacks.replyXattr(req, size) { () throws(FSError) in
                    try f.getxattr(inode, name: LowLevelCallbacks.name(name), size: size, caller: LowLevelCallbacks.caller(req))
                }
            }
        }
        ops.listxattr = { req, node, size in
            LowLevelCallbacks.with(req, node) { f, inode in
                LowLevelCallbacks.replyXattr(req, size) { () throws(FSError) in try f.listxattr(inode, size: size) }
            }
        }
        ops.removexattr = { req, node, name in
            LowLevelCallbacks.with(req, node) { f, inode in
                LowLevelCallbacks.replyStatus(req) { () throws(FSError) in try f.removexattr(inode, name: LowLevelCallbacks.name(name)) }
            }
        }
        // Only reached without default_permissions, which the mount always sets: existence only.
        ops.access = { req, node, _ in
            LowLevelCallbacks.with(req, node) { f, inode in
                LowLevelCallbacks.replyStatus(req) { () throws(FSError) in _ = try f.getattr(inode) }
            }
        }
        ops.fallocate = { req, _, mode, offset, length, fi in
            LowLevelCallbacks.replyStatus(req) { () throws(FSError) in
                try LowLevelCallbacks.fs(req).fallocate(fi!.pointee.fh, mode: mode, offset: Int(offset), length: Int(length),
                                                        caller: LowLevelCallbacks.caller(req))
            }
        }
        return ops
    }
}
