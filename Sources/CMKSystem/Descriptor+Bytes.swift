/// The transfers on byte arrays, for the callers that keep their data in `[UInt8]`.
/// (`withUnsafeBytes` rethrows untyped errors, so these carry the typed error out in a Result.)
extension Descriptor {
    /// read(2) once, up to `count` bytes.
    public func read(upTo count: Int) throws(SystemError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let n = try bytes.withUnsafeMutableBytes { b in Result { () throws(SystemError) in try read(into: b) } }.get()
        bytes.removeLast(count - n)
        return bytes
    }

    /// pread(2) until `count` bytes are read or the file ends.
    public func preadFully(count: Int, at offset: Int) throws(SystemError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let n = try bytes.withUnsafeMutableBytes { b in Result { () throws(SystemError) in try preadFully(into: b, at: offset) } }.get()
        bytes.removeLast(count - n)
        return bytes
    }

    /// write(2) until all of `bytes` is written.
    public func writeAll(_ bytes: [UInt8]) throws(SystemError) {
        try bytes.withUnsafeBytes { b in Result { () throws(SystemError) in try writeAll(b) } }.get()
    }

    /// pwrite(2) until all of `bytes` is written at `offset`.
    public func pwriteAll(_ bytes: [UInt8], at offset: Int) throws(SystemError) {
        try bytes.withUnsafeBytes { b in Result { () throws(SystemError) in try pwriteAll(b, at: offset) } }.get()
    }

    /// send(2) until all of `bytes` is sent (MSG_NOSIGNAL).
    public func sendAll(_ bytes: [UInt8]) throws(SystemError) {
        try bytes.withUnsafeBytes { b in Result { () throws(SystemError) in try sendAll(b) } }.get()
    }

    /// recv(2) once, up to `count` bytes; empty when the peer has closed.
    public func receive(upTo count: Int) throws(SystemError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let n = try bytes.withUnsafeMutableBytes { b in Result { () throws(SystemError) in try receive(into: b) } }.get()
        bytes.removeLast(count - n)
        return bytes
    }
}
