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
    static func with(_ req: Req?, _ node: fuse_ino_t, _ body: (FileSystem, Node) -> Void) {
        let f = fs(req)
        let found = f.withNode(node, stale: false) { n in body(f, n); return true }
        if !found { fuse_reply_err(req, ESTALE) }
    }

    static func replyEntry(_ req: Req?, _ result: (fuse_entry_param, Int32)) {
        var (e, rc) = result
        if rc == 0 { fuse_reply_entry(req, &e) } else { fuse_reply_err(req, rc) }
    }

    static func replyAttr(_ req: Req?, _ result: (stat, Int32)) {
        var (st, rc) = result
        if rc == 0 { fuse_reply_attr(req, &st, FileSystem.cacheSeconds) } else { fuse_reply_err(req, rc) }
    }

    static func replyXattr(_ req: Req?, _ size: Int, _ result: ([UInt8], Int, Int32)) {
        let (bytes, length, rc) = result
        if rc != 0 { fuse_reply_err(req, rc) }
        else if size == 0 { fuse_reply_xattr(req, length) }
        else { bytes.withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), length) } }
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
            // Splice copies made reads slower here and gain nothing for ciphertext.
            conn.pointee.want &= ~UInt32(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE)
        }
        ops.lookup = { req, parent, name in
            LowLevelCallbacks.with(req, parent) { f, dir in
                LowLevelCallbacks.replyEntry(req, f.lookup(dir, LowLevelCallbacks.name(name)))
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
            LowLevelCallbacks.with(req, node) { f, inode in LowLevelCallbacks.replyAttr(req, f.getattr(inode)) }
        }
        ops.setattr = { req, node, attr, toSet, fi in
            LowLevelCallbacks.with(req, node) { f, inode in
                LowLevelCallbacks.replyAttr(req, f.setattr(inode, attr!.pointee, toSet: toSet, fh: fi?.pointee.fh,
                                                                  caller: LowLevelCallbacks.caller(req)))
            }
        }
        ops.readlink = { req, node in
            LowLevelCallbacks.with(req, node) { f, inode in
                let (target, rc) = f.readlink(inode)
                if rc == 0 { fuse_reply_readlink(req, target) } else { fuse_reply_err(req, rc) }
            }
        }
        ops.mknod = { req, parent, name, mode, rdev in
            LowLevelCallbacks.with(req, parent) { f, dir in
                LowLevelCallbacks.replyEntry(req, f.mknod(dir, LowLevelCallbacks.name(name), mode: mode, rdev: rdev,
                                                          caller: LowLevelCallbacks.caller(req)))
            }
        }
        ops.mkdir = { req, parent, name, mode in
            LowLevelCallbacks.with(req, parent) { f, dir in
                LowLevelCallbacks.replyEntry(req, f.mkdir(dir, LowLevelCallbacks.name(name), mode: mode, caller: LowLevelCallbacks.caller(req)))
            }
        }
        ops.unlink = { req, parent, name in
            LowLevelCallbacks.with(req, parent) { f, dir in fuse_reply_err(req, f.unlink(dir, LowLevelCallbacks.name(name))) }
        }
        ops.rmdir = { req, parent, name in
            LowLevelCallbacks.with(req, parent) { f, dir in fuse_reply_err(req, f.rmdir(dir, LowLevelCallbacks.name(name))) }
        }
        ops.symlink = { req, target, parent, name in
            LowLevelCallbacks.with(req, parent) { f, dir in
                LowLevelCallbacks.replyEntry(req, f.symlink(target: LowLevelCallbacks.name(target), dir, LowLevelCallbacks.name(name),
                                                            caller: LowLevelCallbacks.caller(req)))
            }
        }
        ops.rename = { req, parent, name, newParent, newName, flags in
            LowLevelCallbacks.with(req, parent) { f, dir in
                let rc = f.withNode(newParent, stale: ESTALE) { newDir in
                    f.rename(dir, LowLevelCallbacks.name(name), newDir, LowLevelCallbacks.name(newName), flags: flags)
                }
                fuse_reply_err(req, rc)
            }
        }
        ops.link = { req, node, newParent, newName in
            LowLevelCallbacks.with(req, node) { f, inode in
                let result = f.withNode(newParent, stale: (fuse_entry_param(), ESTALE)) { newDir in
                    f.link(inode, newDir, LowLevelCallbacks.name(newName))
                }
                LowLevelCallbacks.replyEntry(req, result)
            }
        }
        ops.open = { req, node, fi in
            LowLevelCallbacks.with(req, node) { f, inode in
                let (handle, rc) = f.open(inode, flags: fi!.pointee.flags, caller: LowLevelCallbacks.caller(req))
                guard rc == 0 else { fuse_reply_err(req, rc); return }
                fi!.pointee.fh = handle
                // Nothing is buffered in the daemon, so close(2) needs no FLUSH round trip.
                fi!.pointee.noflush = 1
                if fuse_reply_open(req, fi) != 0 { _ = f.release(handle) }
            }
        }
        ops.create = { req, parent, name, mode, fi in
            LowLevelCallbacks.with(req, parent) { f, dir in
                var (e, handle, rc) = f.create(dir, LowLevelCallbacks.name(name), mode: mode, flags: fi!.pointee.flags,
                                               caller: LowLevelCallbacks.caller(req))
                guard rc == 0 else { fuse_reply_err(req, rc); return }
                fi!.pointee.fh = handle
                fi!.pointee.noflush = 1
                if fuse_reply_create(req, &e, fi) != 0 { _ = f.release(handle) }
            }
        }
        ops.read = { req, _, size, offset, fi in
            let rc = LowLevelCallbacks.fs(req).read(fi!.pointee.fh, size: size, at: Int(offset)) { data in
                _ = fuse_reply_buf(req, data.baseAddress?.assumingMemoryBound(to: CChar.self), data.count)
            }
            if rc != 0 { fuse_reply_err(req, rc) }
        }
        ops.write = { req, _, buf, size, offset, fi in
            let (n, rc) = LowLevelCallbacks.fs(req).write(fi!.pointee.fh, UnsafeRawBufferPointer(start: buf, count: size), at: Int(offset))
            if rc == 0 { fuse_reply_write(req, n) } else { fuse_reply_err(req, rc) }
        }
        ops.flush = { req, _, _ in fuse_reply_err(req, 0) }
        ops.release = { req, _, fi in fuse_reply_err(req, LowLevelCallbacks.fs(req).release(fi!.pointee.fh)) }
        ops.fsync = { req, _, datasync, fi in
            fuse_reply_err(req, LowLevelCallbacks.fs(req).fsync(fi!.pointee.fh, dataOnly: datasync != 0))
        }
        ops.opendir = { req, node, fi in
            LowLevelCallbacks.with(req, node) { f, inode in
                let (handle, rc) = f.opendir(inode)
                guard rc == 0 else { fuse_reply_err(req, rc); return }
                fi!.pointee.fh = handle
                if fuse_reply_open(req, fi) != 0 { _ = f.releasedir(handle) }
            }
        }
        ops.readdir = { req, _, size, offset, fi in
            let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
            defer { buffer.deallocate() }
            var used = 0
            let rc = LowLevelCallbacks.fs(req).readdir(fi!.pointee.fh, offset: Int(offset)) { name, st, next in
                var st = st
                let need = fuse_add_direntry(req, buffer + used, size - used, name, &st, off_t(next))
                guard need <= size - used else { return false }
                used += need
                return true
            }
            if rc == 0 { fuse_reply_buf(req, buffer, used) } else { fuse_reply_err(req, rc) }
        }
        ops.releasedir = { req, _, fi in fuse_reply_err(req, LowLevelCallbacks.fs(req).releasedir(fi!.pointee.fh)) }
        ops.fsyncdir = { req, _, _, _ in fuse_reply_err(req, 0) }
        ops.statfs = { req, node in
            LowLevelCallbacks.with(req, node) { f, inode in
                var (st, rc) = f.statfs(inode)
                if rc == 0 { fuse_reply_statfs(req, &st) } else { fuse_reply_err(req, rc) }
            }
        }
        ops.setxattr = { req, node, name, value, size, flags in
            LowLevelCallbacks.with(req, node) { f, inode in
                fuse_reply_err(req, f.setxattr(inode, name: LowLevelCallbacks.name(name),
                                               value: UnsafeRawBufferPointer(start: value, count: size), flags: flags,
                                               caller: LowLevelCallbacks.caller(req)))
            }
        }
        ops.getxattr = { req, node, name, size in
            // The kernel asks for security.capability before every write; only user.* names can
            // exist here, so answer the rest without opening the inode.
            guard let name, strncmp(name, "user.", 5) == 0 else { fuse_reply_err(req, ENODATA); return }
            LowLevelCallbacks.with(req, node) { f, inode in
                LowLevelCallbacks.replyXattr(req, size, f.getxattr(inode, name: LowLevelCallbacks.name(name), size: size,
                                                                      caller: LowLevelCallbacks.caller(req)))
            }
        }
        ops.listxattr = { req, node, size in
            LowLevelCallbacks.with(req, node) { f, inode in
                LowLevelCallbacks.replyXattr(req, size, f.listxattr(inode, size: size))
            }
        }
        ops.removexattr = { req, node, name in
            LowLevelCallbacks.with(req, node) { f, inode in
                fuse_reply_err(req, f.removexattr(inode, name: LowLevelCallbacks.name(name)))
            }
        }
        // Only reached without default_permissions, which the mount always sets: existence only.
        ops.access = { req, node, _ in
            LowLevelCallbacks.with(req, node) { f, inode in fuse_reply_err(req, f.getattr(inode).1) }
        }
        ops.fallocate = { req, _, mode, offset, length, fi in
            fuse_reply_err(req, LowLevelCallbacks.fs(req).fallocate(fi!.pointee.fh, mode: mode, offset: Int(offset), length: Int(length)))
        }
        return ops
    }
}
