import Glibc
import CMKSystem

/// Reads the complete records of a log directory in chain order, a chunk at a time (memory
/// bounded by the chunk and the longest record, not the log), and, asked again, the records
/// appended since: `audit show`/`export` and their `--follow`.
///
/// With `check` set, each record is checked against the chain before it is handed on, and
/// `read` throws (`.malformed`) at the first that does not continue it: the records before it
/// were handed on, none after. Without, it only reads. A torn record at
/// the end of the newest segment is left for the next call (the writer may be finishing it); one
/// at the end of an older segment is skipped, as `verify` skips it (the writer never appends
/// after a torn record: it starts a new segment).
public struct AuditTail {
    public let directory: String
    /// The segment being read and how many bytes of it were consumed (whole lines only).
    var current: AuditSegments.Segment?
    var offset = 0
    /// Lines of `current` consumed, for a problem's position.
    var line = 0
    var buffer: [UInt8]
    /// The chain check records pass before they are handed on (nil: not checked).
    public var check: AuditStreamCheck?

    public init(directory: String, chunk: Int = 1 << 20) {
        self.directory = directory
        buffer = [UInt8](repeating: 0, count: chunk)
    }

    /// Calls `body` with each complete record line (without its newline) not yet read, in order.
    public mutating func read(_ body: (ArraySlice<UInt8>) -> Void) throws(AuditError) {
        let segments = AuditSegments.list(directory)
        var index: Int
        if let current {
            // A segment only ever follows the current one; a current one gone (archived away)
            // resumes at the first segment after it.
            index = segments.firstIndex(of: current)
                ?? segments.firstIndex { ($0.firstSeq, $0.attempt) > (current.firstSeq, current.attempt) }
                ?? segments.count
            if segments.firstIndex(of: current) == nil { offset = 0; line = 0 }
        } else {
            index = 0
        }
        while index < segments.count {
            let segment = segments[index]
            if segment != current { current = segment; offset = 0; line = 0 }
            try readSegment(segment.path, body)
            // A later segment exists: this one is final (the writer rolled past it), so what is
            // left of it is a torn tail.
            guard index + 1 < segments.count else { return }
            index += 1
        }
    }

    mutating func readSegment(_ path: String, _ body: (ArraySlice<UInt8>) -> Void) throws(AuditError) {
        let file: FileDescriptor
        do { file = try FileDescriptor.open(path, O_RDONLY | O_CLOEXEC) } catch {
            // Archived (moved away) between the listing and the open: nothing left to read here.
            if error.errno == .ENOENT { return }
            throw .system(error)
        }
        let fd = file.descriptor
        var filled = 0
        while true {
            let want = buffer.count - filled
            let n = try buffer.withUnsafeMutableBytes { b in
                Result { () throws(SystemError) in
                    try fd.preadFully(into: UnsafeMutableRawBufferPointer(rebasing: b[filled...]), at: offset + filled)
                }
            }.mapError { AuditError.system("read", path, $0.errno.rawValue) }.get()
            filled += n
            guard let last = buffer[..<filled].lastIndex(of: 0x0A) else {
                // No whole line in the buffer: a record longer than it (grow), or the end.
                if n == want { buffer += [UInt8](repeating: 0, count: buffer.count); continue }
                return
            }
            var start = 0
            while start <= last {
                let end = buffer[start...last].firstIndex(of: 0x0A)!
                line += 1
                if check != nil, let problem = check!.check(buffer[start..<end]) {
                    let name = path.split(separator: "/").last.map(String.init) ?? path
                    throw AuditError(.malformed, "\(name) line \(line): \(problem)",
                                     hint: "run cmkfs audit verify VOLUME: it names what was done to the log")
                }
                body(buffer[start..<end])
                start = end + 1
            }
            offset += start
            // Keep the unfinished line at the front for the next read.
            let rest = filled - start
            if rest > 0 { buffer.withUnsafeMutableBytes { b in _ = memmove(b.baseAddress!, b.baseAddress! + start, rest) } }
            filled = rest
            if n < want { return }
        }
    }
}
