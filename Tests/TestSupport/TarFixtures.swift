import Foundation

/// A fresh directory under /tmp, removed when the closure returns.
public func withTempDir<T>(_ body: (String) throws -> T) throws -> T {
    var template = Array("/tmp/imgvol-tests.XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw CocoaError(.fileWriteUnknown) }
    let dir = String(cString: made)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    return try body(dir)
}

/// One tar entry as Python's `tarfile` will write it.
/// One tar entry, written by Python's tarfile so fixtures come from an independent writer.
public struct TarEntry: Encodable, Sendable {
    public var name: String
    public var type: String
    public var data = ""  // base64
    public var mode: Int
    public var uid = 0
    public var gid = 0
    public var mtime: Double = 1_700_000_000
    public var link = ""
    public var major = 0
    public var minor = 0
    public var pax: [String: String]? = nil

    public static func file(_ name: String, _ content: [UInt8] = [], mode: Int = 0o644) -> TarEntry {
        TarEntry(name: name, type: "file", data: Data(content).base64EncodedString(), mode: mode)
    }
    public static func file(_ name: String, _ text: String, mode: Int = 0o644) -> TarEntry { file(name, Array(text.utf8), mode: mode) }
    public static func dir(_ name: String, mode: Int = 0o755) -> TarEntry { TarEntry(name: name, type: "dir", mode: mode) }
    public static func symlink(_ name: String, _ target: String) -> TarEntry { TarEntry(name: name, type: "symlink", mode: 0o777, link: target) }
    public static func hardlink(_ name: String, _ target: String) -> TarEntry { TarEntry(name: name, type: "hardlink", mode: 0o644, link: target) }
    public static func fifo(_ name: String, mode: Int = 0o644) -> TarEntry { TarEntry(name: name, type: "fifo", mode: mode) }
    public static func char(_ name: String, _ major: Int, _ minor: Int) -> TarEntry { TarEntry(name: name, type: "char", mode: 0o666, major: major, minor: minor) }
    public static func block(_ name: String, _ major: Int, _ minor: Int) -> TarEntry { TarEntry(name: name, type: "block", mode: 0o660, major: major, minor: minor) }

    public func with(_ change: (inout TarEntry) -> Void) -> TarEntry { var e = self; change(&e); return e }
}

private let tarScript = """
import sys, json, tarfile, io, base64
spec = json.load(open(sys.argv[1]))
fmt = {"pax": tarfile.PAX_FORMAT, "gnu": tarfile.GNU_FORMAT, "ustar": tarfile.USTAR_FORMAT}[spec["format"]]
types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
         "fifo": tarfile.FIFOTYPE, "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE}
with tarfile.open(spec["out"], "w", format=fmt, encoding="utf-8") as t:
    for e in spec["entries"]:
        ti = tarfile.TarInfo(e["name"])
        ti.type = types[e["type"]]
        ti.mode, ti.uid, ti.gid = e["mode"], e["uid"], e["gid"]
        m = e["mtime"]
        ti.mtime = int(m) if float(m).is_integer() else m
        ti.linkname = e["link"]
        ti.devmajor, ti.devminor = e["major"], e["minor"]
        ti.uname = ti.gname = ""
        if e.get("pax"):
            ti.pax_headers = e["pax"]
        data = base64.b64decode(e["data"])
        if ti.type == tarfile.REGTYPE:
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        else:
            t.addfile(ti)
"""

public struct FixtureFailure: Error, CustomStringConvertible { public let description: String }

/// Runs a tool and fails with its stderr when it exits non-zero.
public func run(_ arguments: [String], stdout: String? = nil) throws {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = arguments
    let err = Pipe()
    p.standardError = err
    if let stdout {
        _ = FileManager.default.createFile(atPath: stdout, contents: nil)
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: stdout))
    }
    try p.run()
    let message = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else {
        throw FixtureFailure(description: "\(arguments.prefix(2)) failed: \(String(decoding: message, as: UTF8.self))")
    }
}

/// Writes `entries` as a tar at `path` (format "pax", "gnu" or "ustar").
public func makeTar(_ entries: [TarEntry], at path: String, format: String = "pax") throws {
    struct Spec: Encodable { var out: String; var format: String; var entries: [TarEntry] }
    let specPath = path + ".spec.json"
    try JSONEncoder().encode(Spec(out: path, format: format, entries: entries)).write(to: URL(fileURLWithPath: specPath))
    defer { try? FileManager.default.removeItem(atPath: specPath) }
    try run(["python3", "-c", tarScript, specPath])
}

public func readFile(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }

public func writeFile(_ bytes: [UInt8], to path: String) throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }

/// Deterministic, poorly compressible bytes.
public func pseudoRandomBytes(_ count: Int, seed: UInt64 = 42) -> [UInt8] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return UInt8(truncatingIfNeeded: state >> 33)
    }
}
