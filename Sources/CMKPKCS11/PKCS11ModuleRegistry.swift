import Glibc
import CMKSystem

/// p11-kit's module registry: one `NAME.module` file per installed PKCS#11 module, whose
/// `module:` key is the library (an absolute path, or a file name in p11-kit's module
/// directory). The operator's files in `/etc/pkcs11/modules` override the packages' files of the
/// same name in `/usr/share/p11-kit/modules` (p11-kit's own order). softhsm2 ships
/// `softhsm2.module`, so `--pkcs11-module softhsm2` finds it wherever the distribution put it.
public struct PKCS11ModuleRegistry: Sendable {
    /// Directories of `.module` files, lowest precedence first.
    public var directories: [String]
    /// Where a relative `module:` is looked up (p11-kit's `p11_module_path`).
    public var moduleDirectories: [String]

    public static let system = PKCS11ModuleRegistry(
        directories: ["/usr/share/p11-kit/modules", "/etc/pkcs11/modules"],
        moduleDirectories: ["/usr/lib/x86_64-linux-gnu/pkcs11", "/usr/lib/aarch64-linux-gnu/pkcs11", "/usr/lib64/pkcs11", "/usr/lib/pkcs11"])

    public init(directories: [String], moduleDirectories: [String]) {
        self.directories = directories
        self.moduleDirectories = moduleDirectories
    }

    /// Every registered module: its name (the file name without `.module`) and library path.
    public func modules() -> [(name: String, path: String)] {
        var found: [String: String] = [:]
        for directory in directories {
            // CMKSystem's reader: `d_name` read as a value would copy 256 bytes past a short record.
            guard let entries = try? DirectoryEntries.of(directory) else { continue }
            for file in entries.map(\.name) {
                guard file.hasSuffix(".module"), !file.hasPrefix(".") else { continue }
                let name = String(file.dropLast(".module".count))
                if let library = Self.moduleKey(in: directory + "/" + file) {
                    found[name] = library.hasPrefix("/") ? library : resolve(library)
                } else {
                    found[name] = nil
                }
            }
        }
        return found.map { ($0.key, $0.value) }.sorted { $0.name < $1.name }
    }

    /// The library of the module named `name`: a registry name (`softhsm2`), else the library
    /// whose file is `lib<name>.so` (RFC 7512's reading of `module-name`). nil when none matches.
    public func path(ofModule name: String) -> String? {
        let all = modules()
        if let hit = all.first(where: { $0.name == name }) { return hit.path }
        let library = "lib\(name).so"
        if let hit = all.first(where: { ($0.path.split(separator: "/").last.map(String.init) ?? "") == library }) { return hit.path }
        return moduleDirectories.map { $0 + "/" + library }.first { (try? Descriptor.cwd.access($0, mode: R_OK)) != nil }
    }

    /// A relative `module:` value in the first module directory that has it (else the first).
    private func resolve(_ library: String) -> String {
        let candidates = moduleDirectories.map { $0 + "/" + library }
        return candidates.first { (try? Descriptor.cwd.access($0, mode: R_OK)) != nil } ?? candidates.first ?? library
    }

    /// The `module:` value of a p11-kit config file (`key: value` lines, `#` comments).
    static func moduleKey(in file: String) -> String? {
        guard let f = fopen(file, "r") else { return nil }
        defer { fclose(f) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, f) > 0, let line {
            let text = String(cString: line)
            guard let colon = text.firstIndex(of: ":") else { continue }
            let key = text[..<colon].trimmingSpaces
            guard !key.hasPrefix("#"), key == "module" else { continue }
            let value = text[text.index(after: colon)...].trimmingSpaces
            return value.isEmpty ? nil : value
        }
        return nil
    }

    /// Turns what an operator gave as `--pkcs11-module` into a library path: a value with a `/`
    /// is a path, anything else a module name looked up here. Throws naming the registered
    /// modules when the name is not one of them.
    public func library(for module: String) throws(PKCS11OpenError) -> String {
        if module.contains("/") { return module }
        if let path = path(ofModule: module) { return path }
        let known = modules().map(\.name)
        throw .moduleNotRegistered(name: module, known: known, directories: directories)
    }
}

extension Substring {
    fileprivate var trimmingSpaces: String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }.reversed())
    }
}
