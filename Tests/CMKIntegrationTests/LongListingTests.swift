import Foundation
import XCTest

/// What `ls -l` asks of the mount per listed file (issue 20: the `ls -lR` row).
final class LongListingTests: IntegrationTestCase {
    /// xattr names outside user.* answer ENOTSUP to getxattr too (this filesystem has no security
    /// labels and no POSIX ACLs), as setxattr already did and docs/design-notes.md says, not
    /// ENODATA: `ls -l` (coreutils) remembers an unsupported filesystem and stops asking, where
    /// ENODATA made it ask for security.selinux and system.posix_acl_access again for every file
    /// it listed, two GETXATTR requests per file. user.* names are unchanged.
    func testLongListingAsksForLabelsAndACLsOnce() throws {
        sh("mkdir \(mnt)/l && cd \(mnt)/l && for i in $(seq 1 30); do echo $i > f$i; done")
        XCTAssertEqual(py("""
            import errno, os, sys
            f = sys.argv[1] + '/l/f1'
            os.setxattr(f, 'user.kept', b'v')
            for name in ('security.selinux', 'security.capability', 'system.posix_acl_access', 'trusted.x', 'user.nope', 'user.kept'):
                try: print(name, os.getxattr(f, name).decode())
                except OSError as e: print(name, errno.errorcode[e.errno])
            try: os.getxattr(sys.argv[1] + '/l', 'system.posix_acl_default')
            except OSError as e: print('dir', errno.errorcode[e.errno])
            """, [mnt]), """
            security.selinux ENOTSUP
            security.capability ENOTSUP
            system.posix_acl_access ENOTSUP
            trusted.x ENOTSUP
            user.nope ENODATA
            user.kept v
            dir ENOTSUP

            """)
        let trace = fx.root + "/ls-xattr.trace"
        let listed = sh("strace -qq -e trace=getxattr,lgetxattr -o \(trace) ls -l \(mnt)/l")
        XCTAssertEqual(listed.split(separator: "\n").count, 31, "ls -l lists the 30 files")
        XCTAssertFalse(listed.contains("+"), "no file shows an ACL")
        let asked = try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n").filter { $0.contains("xattr(") }
        XCTAssertLessThan(asked.count, 6, "ls -l of 30 files asked for \(asked.count) xattrs: \(asked.prefix(4))")
    }
}
