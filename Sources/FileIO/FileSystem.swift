import CLinux
#if canImport(Glibc)
import Glibc
#endif

/// Path-level helpers with errno-carrying errors. Writes that others may read go through
/// `writeAtomically`, so a reader sees the old file or the new one, never a torn one.
public enum FileSystem {
    public static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Bytes the file occupies on disk (allocated blocks, so a sparse file's holes count for
    /// nothing), not its apparent size; a directory counts what it holds.
    public static func diskUsage(_ path: String) -> Int64 {
        var st = stat()
        guard lstat(path, &st) == 0 else { return 0 }
        var total = Int64(st.st_blocks) * 512
        if (st.st_mode & S_IFMT) == S_IFDIR {
            for name in listDirectory(path) { total += diskUsage(path + "/" + name) }
        }
        return total
    }

    public static func ageInSeconds(_ path: String) -> Int {
        var st = stat()
        guard lstat(path, &st) == 0 else { return 0 }
        return time(nil) - st.st_mtim.tv_sec
    }

    public static func makeDirectory(_ path: String, mode: mode_t = 0o755) throws(SystemError) {
        if let error = failure(of: { mkdir(path, mode) }), error != EEXIST { throw SystemError("mkdir", path, errno: error) }
    }

    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(SystemError) {
        var current = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            current += "/" + part
            try makeDirectory(current, mode: mode)
        }
    }

    public static func remove(_ path: String) throws(SystemError) {
        if let error = failure(of: { unlink(path) }), error != ENOENT { throw SystemError("unlink", path, errno: error) }
    }

    public static func rename(_ from: String, _ to: String) throws(SystemError) {
        _ = try retryingEINTR("rename", to) { Glibc.rename(from, to) }
    }

    /// Flushes the whole file system holding `path`: one journal commit for many new files,
    /// where an fsync of each costs a commit apiece.
    public static func syncFileSystem(of path: String) throws(SystemError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open", path) }
        defer { close(fd) }
        if imgvol_syncfs(fd) != 0 { throw SystemError("syncfs", path) }
    }

    public static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        fsync(fd)
        close(fd)
    }

    /// Best effort: an unreadable directory lists as empty. For state that decides what to
    /// keep or delete, use `names(in:)`.
    public static func listDirectory(_ path: String) -> [String] {
        (try? names(in: path)) ?? []
    }

    /// The names in a directory; a directory that cannot be read is an error.
    public static func names(in path: String) throws(SystemError) -> [String] {
        guard let dir = opendir(path) else { throw SystemError("opendir", path) }
        defer { closedir(dir) }
        var names: [String] = []
        while let ent = readdir(dir) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Reads a whole file; reads to EOF rather than trusting st_size, which /proc reports as 0.
    public static func readFile(_ path: String) throws(SystemError) -> [UInt8] {
        let handle = try OpenFile.openRead(path)
        var bytes = [UInt8](repeating: 0, count: max(Int(try handle.size()), 4096))
        var count = 0
        while true {
            if count == bytes.count { bytes += [UInt8](repeating: 0, count: bytes.count) }
            let start = count
            let n = try bytes.withUnsafeMutableBytes { b in
                Result { () throws(SystemError) in try handle.read(into: UnsafeMutableRawBufferPointer(rebasing: b[start...]), at: Int64(start)) }
            }.get()
            count += n
            if n == 0 || count < bytes.count { break }
        }
        return Array(bytes.prefix(count))
    }

    /// Unique temp name next to `dir`, so the final rename stays on one file system.
    public static func temporaryPath(in dir: String, for name: String) -> String {
        "\(dir)/.\(name).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
    }

    /// temp file + fsync + rename + directory fsync. Not `durable`: temp file + rename, for
    /// state that cannot outlive a reboot anyway (a live mount's record); readers still never
    /// see half a file, and the caller does not wait for the disk.
    public static func writeAtomically(_ bytes: [UInt8], to path: String, tmpDir: String, mode: mode_t = 0o644,
                                       durable: Bool = true) throws(SystemError) {
        let name = String(path.split(separator: "/").last ?? "file")
        let tmp = temporaryPath(in: tmpDir, for: name)
        do {
            let handle = try OpenFile(path: tmp, flags: O_WRONLY | O_CREAT | O_EXCL, mode: mode)
            try handle.writeAll(bytes)
            if durable { try handle.sync() }
            handle.close()
            try rename(tmp, path)
        } catch {
            try? remove(tmp)
            throw error
        }
        if durable { syncDirectory(parent(of: path)) }
    }

    public static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// Removes a tree without following symlinks (unlinkat on the entries themselves).
    public static func removeTree(_ path: String) throws(SystemError) {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            for name in listDirectory(path) { try removeTree(path + "/" + name) }
            if let error = failure(of: { rmdir(path) }), error != ENOENT { throw SystemError("rmdir", path, errno: error) }
        } else {
            try remove(path)
        }
    }
}
