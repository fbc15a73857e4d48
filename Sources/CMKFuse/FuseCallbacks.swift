import Glibc
import CFuse3

/// The libfuse high-level operations table. Each entry is a non-capturing closure that finds the
/// `FileSystem` through `fuse_get_context()->private_data` and forwards to it.
///
/// Defined here, not in `main.swift`: closures in top-level code are main-actor isolated and
/// trap when a FUSE worker thread calls them.
enum FuseCallbacks {
    static func fs() -> FileSystem {
        Unmanaged<FileSystem>.fromOpaque(fuse_get_context()!.pointee.private_data!).takeUnretainedValue()
    }

    static func rel(_ path: UnsafePointer<CChar>?) -> String? { path.map(FileSystem.relative) }

    static func fh(_ fi: UnsafeMutablePointer<fuse_file_info>?) -> UInt64? { fi.map { $0.pointee.fh } }

    static func operations() -> fuse_operations {
        var ops = fuse_operations()
        ops.`init` = { conn, cfg in
            // Inode numbers from the backing tree, so hard links show as one inode.
            cfg?.pointee.use_ino = 1
            // Operations on open files go by handle; unlinked-open files need no hidden rename.
            cfg?.pointee.nullpath_ok = 1
            cfg?.pointee.hard_remove = 1
            if let conn {
                conn.pointee.max_write = 1 << 20
                conn.pointee.max_readahead = 1 << 20
                conn.pointee.want |= UInt32(FUSE_CAP_ATOMIC_O_TRUNC)
                // Splice copies made reads slower here and gain nothing for ciphertext.
                conn.pointee.want &= ~UInt32(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE)
            }
            return fuse_get_context()!.pointee.private_data
        }
        ops.getattr = { path, st, fi in FuseCallbacks.fs().getattr(FuseCallbacks.rel(path), fh: FuseCallbacks.fh(fi), st!) }
        ops.readlink = { path, buf, size in FuseCallbacks.fs().readlink(FuseCallbacks.rel(path)!, into: buf!, size: size) }
        ops.mknod = { path, mode, dev in FuseCallbacks.fs().mknod(FuseCallbacks.rel(path)!, mode: mode, device: dev) }
        ops.mkdir = { path, mode in FuseCallbacks.fs().mkdir(FuseCallbacks.rel(path)!, mode: mode) }
        ops.unlink = { path in FuseCallbacks.fs().unlink(FuseCallbacks.rel(path)!) }
        ops.rmdir = { path in FuseCallbacks.fs().rmdir(FuseCallbacks.rel(path)!) }
        ops.symlink = { target, path in FuseCallbacks.fs().symlink(target: String(cString: target!), FuseCallbacks.rel(path)!) }
        ops.rename = { from, to, flags in FuseCallbacks.fs().rename(FuseCallbacks.rel(from)!, FuseCallbacks.rel(to)!, flags: flags) }
        ops.link = { from, to in FuseCallbacks.fs().link(FuseCallbacks.rel(from)!, FuseCallbacks.rel(to)!) }
        ops.chmod = { path, mode, fi in FuseCallbacks.fs().chmod(FuseCallbacks.rel(path), fh: FuseCallbacks.fh(fi), mode: mode) }
        ops.chown = { path, uid, gid, fi in FuseCallbacks.fs().chown(FuseCallbacks.rel(path), fh: FuseCallbacks.fh(fi), uid: uid, gid: gid) }
        ops.truncate = { path, size, fi in FuseCallbacks.fs().truncate(FuseCallbacks.rel(path), fh: FuseCallbacks.fh(fi), to: Int(size)) }
        ops.open = { path, fi in
            let (handle, rc) = FuseCallbacks.fs().open(FuseCallbacks.rel(path)!, flags: fi!.pointee.flags)
            fi!.pointee.fh = handle
            return rc
        }
        ops.create = { path, mode, fi in
            let (handle, rc) = FuseCallbacks.fs().create(FuseCallbacks.rel(path)!, mode: mode, flags: fi!.pointee.flags)
            fi!.pointee.fh = handle
            return rc
        }
        ops.read = { _, buf, size, offset, fi in
            FuseCallbacks.fs().read(fi!.pointee.fh, into: UnsafeMutableRawBufferPointer(start: buf, count: size), at: Int(offset))
        }
        ops.write = { _, buf, size, offset, fi in
            FuseCallbacks.fs().write(fi!.pointee.fh, UnsafeRawBufferPointer(start: buf, count: size), at: Int(offset))
        }
        ops.statfs = { _, st in FuseCallbacks.fs().statfs(st!) }
        ops.flush = { _, _ in 0 }
        ops.release = { _, fi in FuseCallbacks.fs().release(fi!.pointee.fh) }
        ops.fsync = { _, datasync, fi in FuseCallbacks.fs().fsync(fi!.pointee.fh, dataOnly: datasync != 0) }
        ops.setxattr = { path, name, value, size, flags in
            FuseCallbacks.fs().setxattr(FuseCallbacks.rel(path)!, name: String(cString: name!), value: UnsafeRawBufferPointer(start: value, count: size), flags: flags)
        }
        ops.getxattr = { path, name, value, size in
            FuseCallbacks.fs().getxattr(FuseCallbacks.rel(path)!, name: String(cString: name!), into: UnsafeMutableRawBufferPointer(start: value, count: size))
        }
        ops.listxattr = { path, list, size in
            FuseCallbacks.fs().listxattr(FuseCallbacks.rel(path)!, into: UnsafeMutableRawBufferPointer(start: list, count: size))
        }
        ops.removexattr = { path, name in FuseCallbacks.fs().removexattr(FuseCallbacks.rel(path)!, name: String(cString: name!)) }
        ops.opendir = { path, fi in
            let (handle, rc) = FuseCallbacks.fs().opendir(FuseCallbacks.rel(path)!)
            fi!.pointee.fh = handle
            return rc
        }
        ops.releasedir = { _, fi in FuseCallbacks.fs().releasedir(fi!.pointee.fh) }
        ops.readdir = { _, buf, filler, _, fi, _ in
            FuseCallbacks.fs().readdir(fi!.pointee.fh) { name, st in
                var st = st
                return name.withCString { filler!(buf, $0, &st, 0, fuse_fill_dir_flags(rawValue: 0)) } == 0
            }
        }
        ops.access = { path, mask in FuseCallbacks.fs().access(FuseCallbacks.rel(path)!, mask: mask) }
        ops.utimens = { path, tv, fi in FuseCallbacks.fs().utimens(FuseCallbacks.rel(path), fh: FuseCallbacks.fh(fi), tv) }
        ops.fallocate = { _, mode, offset, length, fi in
            FuseCallbacks.fs().fallocate(fi!.pointee.fh, mode: mode, offset: Int(offset), length: Int(length))
        }
        return ops
    }
}
