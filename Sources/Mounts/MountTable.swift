import FileIO
import Foundation
import OCI
import Store
#if canImport(Glibc)
import Glibc
#endif

/// The kernel's view (/proc/self/mountinfo) joined with imgvol's records: a record counts only
/// while its server runs and its mountpoint is an imgvol FUSE mount.
public struct MountTable: Sendable {
    public let store: ContentStore

    public init(store: ContentStore) { self.store = store }

    public static func key(_ mountpoint: String) -> String {
        String(Digest.of(Array(mountpoint.utf8)).hex.prefix(24))
    }

    public func recordPath(_ mountpoint: String) -> String { store.layout.mountRecord(Self.key(mountpoint)) }
    public func logPath(_ mountpoint: String) -> String { store.layout.mountLog(Self.key(mountpoint)) }

    /// Not synced to disk: a mount does not survive a reboot, and `imgvol mount` waits for
    /// this record (an fsync would be a tenth of a cold mount).
    public func write(_ record: MountRecord) throws {
        try FileSystem.writeAtomically(JSONCoding.encode(record, pretty: true), to: recordPath(record.mountpoint),
                                       tmpDir: store.mountsDir, mode: 0o600, durable: false)
    }

    /// Best effort: a record left behind is ignored (its server is gone) and swept by prune.
    public func remove(_ mountpoint: String) {
        try? FileSystem.remove(recordPath(mountpoint))
        try? FileSystem.remove(sessionPath(mountpoint))
    }

    /// After a clean unmount: the record and the server's log (a log of a server that died
    /// stays, to say why, until prune).
    public func forget(_ mountpoint: String) {
        remove(mountpoint)
        try? FileSystem.remove(logPath(mountpoint))
    }

    public func record(for mountpoint: String) -> MountRecord? {
        guard let bytes = try? FileSystem.readFile(recordPath(mountpoint)) else { return nil }
        return try? JSONCoding.decode(MountRecord.self, from: bytes, what: "mount record")
    }

    /// Records whose server is alive and whose mount is present. Best effort: a record that
    /// cannot be read is not listed (`sweep` is the reader that must not miss one).
    public func live() -> [MountRecord] {
        let mounted = Self.imgvolMountpoints()
        let names = (try? FileSystem.names(in: store.mountsDir)) ?? []
        return recordFiles(names).compactMap(\.record).filter { Self.isLive($0, mounted: mounted) }
            .sorted { $0.mountpoint < $1.mountpoint }
    }

    /// One `<key>.json` under the records directory, and its record (nil: it does not decode).
    struct RecordFile {
        let key: String
        let record: MountRecord?
    }

    /// The records among `names`, the entries of the records directory.
    func recordFiles(_ names: [String]) -> [RecordFile] {
        names.filter { $0.hasSuffix(".json") }.map { name in
            let path = "\(store.mountsDir)/\(name)"
            let record = (try? FileSystem.readFile(path)).flatMap { try? JSONCoding.decode(MountRecord.self, from: $0, what: path) }
            return RecordFile(key: String(name.dropLast(5)), record: record)
        }
    }

    static func imgvolMountpoints() -> Set<String> {
        Set(kernelMounts().filter { $0.fstype == "fuse.imgvol" }.map(\.mountpoint))
    }

    /// Served, or about to be again: between a server's death and its successor's start the
    /// keeper alone holds the mount.
    static func isLive(_ record: MountRecord, mounted: Set<String>) -> Bool {
        (processAlive(record.pid) || record.keeper.map(processAlive) == true) && mounted.contains(record.mountpoint)
    }

    /// Running, not a zombie: a server whose parent died is reaped only later by init, and
    /// kill(pid, 0) still succeeds for it until then.
    public static func processAlive(_ pid: Int32) -> Bool {
        guard pid > 0, [nil, EPERM].contains(failure(of: { kill(pid, 0) })) else { return false }
        guard let stat = try? FileSystem.readFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: UInt8(ascii: ")")),
              close + 2 < stat.count else { return true }
        return stat[close + 2] != UInt8(ascii: "Z")
    }

    public struct KernelMount: Sendable {
        public let mountpoint: String
        public let fstype: String
        public let source: String
    }

    public static func kernelMounts() -> [KernelMount] {
        guard let bytes = try? FileSystem.readFile("/proc/self/mountinfo") else { return [] }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap { line in
            let halves = line.components(separatedBy: " - ")
            guard halves.count >= 2 else { return nil }
            let left = halves[0].split(separator: " ")
            let right = halves[1].split(separator: " ")
            guard left.count >= 5, right.count >= 2 else { return nil }
            return KernelMount(mountpoint: unescape(String(left[4])), fstype: String(right[0]), source: unescape(String(right[1])))
        }
    }

    public static func isMountpoint(_ path: String) -> Bool {
        kernelMounts().contains { $0.mountpoint == path }
    }

    /// mountinfo writes space, tab, newline and backslash as \ooo.
    static func unescape(_ text: String) -> String {
        guard text.contains("\\") else { return text }
        var out: [UInt8] = []
        let bytes = Array(text.utf8)
        var i = 0
        while i < bytes.count {
            if bytes[i] == 0x5c, i + 3 < bytes.count,
               let value = UInt8(String(decoding: bytes[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(value)
                i += 4
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// An absolute, lexically clean path that does not touch the file system (a dead FUSE
    /// mount fails every stat with ENOTCONN).
    public static func absolute(_ path: String) -> String {
        var full = path
        if !path.hasPrefix("/") {
            full = FileManager.default.currentDirectoryPath + "/" + path
        }
        var parts: [Substring] = []
        for part in full.split(separator: "/") {
            if part == "." { continue }
            if part == ".." { if !parts.isEmpty { parts.removeLast() }; continue }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }
}
