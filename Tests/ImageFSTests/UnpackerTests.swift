import TestSupport
import Foundation
@testable import ImageFS
import Layers
import FileIO
import Store
import Testing

private final class Skips: @unchecked Sendable {
    var items: [String] = []
}

private func lstatOf(_ path: String) -> stat? {
    var st = stat()
    return lstat(path, &st) == 0 ? st : nil
}

private func mode(_ path: String) -> UInt32? { lstatOf(path).map { UInt32($0.st_mode) & 0o7777 } }

private func fileType(_ path: String) -> UInt32? { lstatOf(path).map { UInt32($0.st_mode) & UInt32(S_IFMT) } }

private func xattr(_ path: String, _ name: String) throws -> String {
    let out = path + ".xattr-out"
    defer { try? FileManager.default.removeItem(atPath: out) }
    try run(["python3", "-c", "import os,sys; sys.stdout.write(os.getxattr(sys.argv[1], sys.argv[2]).decode())", path, name], stdout: out)
    return String(decoding: try readFile(out), as: UTF8.self)
}

@Suite("Unpacker")
struct UnpackerTests {
    static let tool = (0..<150_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }

    /// Two layers made by tarfile, indexed, merged: the tree the CLI would unpack.
    private func image(in dir: String) throws -> (ImageTree, [String]) {
        let lower: [TarEntry] = [
            TarEntry.dir("etc").with { $0.mtime = 1_600_000_000 },
            TarEntry.file("etc/hosts", "127.0.0.1 localhost\n").with { $0.uid = 1234; $0.gid = 5678 },
            TarEntry.file("bin/tool", Self.tool, mode: 0o4755),
            TarEntry.file("bin/sg", "sg", mode: 0o2755),
            TarEntry.dir("tmp", mode: 0o1777),
            TarEntry.symlink("lib", "usr/lib").with { $0.mtime = 1_500_000_000 },
            TarEntry.hardlink("etc/hosts.bak", "etc/hosts"),
            TarEntry.fifo("run/fifo", mode: 0o600),
            TarEntry.char("dev/null", 1, 3),
            TarEntry.file("empty"),
            TarEntry.dir("ro", mode: 0o555),
            TarEntry.file("ro/file", "read only dir"),
            TarEntry.file("attr", "x").with { $0.pax = ["SCHILY.xattr.user.note": "kept"] },
            TarEntry.file("frac", "f").with { $0.mtime = 1_700_000_000.5 },
        ]
        let upper: [TarEntry] = [
            .file(".wh.empty"),
            .file("etc/motd", "hi"),
            .hardlink("bin/tool2", "bin/tool"),
        ]
        let tars = [dir + "/lower.tar", dir + "/upper.tar"]
        try makeTar(lower, at: tars[0])
        try makeTar(upper, at: tars[1])
        let layers = try tars.map { (name: $0, index: try LayerIndexer.index(tarPath: $0, layer: $0)) }
        return (try ImageTree.build(layers: layers), tars)
    }

    @Test func reproducesTheImage() throws {
        try withTempDir { dir in
            let (tree, tars) = try image(in: dir)
            let out = dir + "/out"
            let skips = Skips()
            var unpacker = Unpacker(tree: tree, layers: try layerData(tars))
            unpacker.onSkip = { path, kind in skips.items.append("\(path) \(kind)") }
            try unpacker.unpack(into: out)

            #expect(skips.items == ["\(out)/dev/null charDevice"])
            #expect(list(out) == ["attr", "bin", "dev", "etc", "frac", "lib", "ro", "run", "tmp"])
            #expect(list(out + "/dev") == [], "the device is skipped, its implicit parent directory is not")
            #expect(list(out + "/etc") == ["hosts", "hosts.bak", "motd"])

            #expect(try readFile(out + "/etc/hosts") == Array("127.0.0.1 localhost\n".utf8))
            #expect(try readFile(out + "/etc/motd") == Array("hi".utf8))
            #expect(try readFile(out + "/bin/tool") == Self.tool)
            #expect(try readFile(out + "/ro/file") == Array("read only dir".utf8))

            #expect(mode(out) == 0o755)
            #expect(mode(out + "/etc/hosts") == 0o644)
            #expect(mode(out + "/bin/tool") == 0o4755)
            #expect(mode(out + "/bin/sg") == 0o2755)
            #expect(mode(out + "/tmp") == 0o1777)
            #expect(mode(out + "/ro") == 0o555)
            #expect(mode(out + "/bin") == 0o755, "implicit parent")
            #expect(fileType(out + "/tmp") == UInt32(S_IFDIR))
            #expect(fileType(out + "/run/fifo") == UInt32(S_IFIFO))
            #expect(mode(out + "/run/fifo") == 0o600)
            #expect(fileType(out + "/lib") == UInt32(S_IFLNK))
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: out + "/lib") == "usr/lib")
            #expect(!FileManager.default.fileExists(atPath: out + "/empty"), "whited out by the upper layer")

            let hosts = try #require(lstatOf(out + "/etc/hosts"))
            let bak = try #require(lstatOf(out + "/etc/hosts.bak"))
            #expect(hosts.st_ino == bak.st_ino)
            #expect(hosts.st_nlink == 2)
            let tool = try #require(lstatOf(out + "/bin/tool"))
            let tool2 = try #require(lstatOf(out + "/bin/tool2"))
            #expect(tool.st_ino == tool2.st_ino)
            #expect(tool.st_nlink == 2)

            #expect(hosts.st_mtim.tv_sec == 1_700_000_000)
            #expect(lstatOf(out + "/etc")?.st_mtim.tv_sec == 1_600_000_000)
            #expect(lstatOf(out + "/lib")?.st_mtim.tv_sec == 1_500_000_000)
            #expect(lstatOf(out + "/frac")?.st_mtim.tv_sec == 1_700_000_000)
            #expect(lstatOf(out + "/frac")?.st_mtim.tv_nsec == 500_000_000)

            if geteuid() == 0 {
                #expect(hosts.st_uid == 1234)
                #expect(hosts.st_gid == 5678)
                #expect(tool.st_uid == 0)
            }
            #expect(try xattr(out + "/attr", "user.note") == "kept")
        }
    }

    @Test func unpacksIntoAnExistingEmptyDirectory() throws {
        try withTempDir { dir in
            let (tree, tars) = try image(in: dir)
            let out = dir + "/empty-out"
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
            try Unpacker(tree: tree, layers: try layerData(tars)).unpack(into: out)
            #expect(try readFile(out + "/bin/tool") == Self.tool)
        }
    }

    /// Files are created with their final permission bits and chown/chmod are skipped when
    /// they already match: a mode the umask narrows, and a target whose setgid bit gives new
    /// entries its group, must still end up as the image says.
    @Test func modesAndOwnersSurviveUmaskAndASetgidTarget() throws {
        try withTempDir { dir in
            let tar = dir + "/l.tar"
            try makeTar([
                .file("wide", "w", mode: 0o666),
                .file("plain", "p", mode: 0o644),
                .dir("sub", mode: 0o777),
                .file("sub/inner", "i", mode: 0o640),
            ], at: tar)
            let tree = try ImageTree.build(layers: [(name: "l", index: try LayerIndexer.index(tarPath: tar, layer: "l"))])
            let out = dir + "/setgid-out"
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
            let asRoot = geteuid() == 0
            if asRoot { #expect(chown(out, 0, 4321) == 0) }
            #expect(chmod(out, 0o2775) == 0)
            let previous = umask(0o022)
            defer { umask(previous) }
            try Unpacker(tree: tree, layers: try layerData([tar])).unpack(into: out)
            #expect(mode(out + "/wide") == 0o666)
            #expect(mode(out + "/plain") == 0o644)
            #expect(mode(out + "/sub") == 0o777, "no setgid bit inherited from the target")
            #expect(mode(out + "/sub/inner") == 0o640)
            if asRoot {
                for path in ["wide", "plain", "sub", "sub/inner"] {
                    #expect(lstatOf(out + "/" + path)?.st_gid == 0, "\(path) keeps the image's group")
                }
            }
        }
    }

    /// The first pass runs one directory per job on several threads, and a thread that finds
    /// the job queue full fills the subdirectory itself; the second finishes directories on
    /// several threads, leaves first (or on one, walking the tree). A wide and deep tree with
    /// hard links between directories, a read-only directory and devices here and there must
    /// come out the same whatever thread made what: every file's bytes and mode, every
    /// directory's mode and time, links sharing one inode with the first path in path order,
    /// and skips reported in path order.
    @Test(arguments: [(1, true), (2, true), (4, true), (4, false)])
    func aWideTreeComesOutWhole(writers: Int, parallelSecondPass: Bool) throws {
        try withTempDir { dir in
            var entries: [TarEntry] = []
            var expected: [String: [UInt8]] = [:]
            for a in 0..<12 {
                for b in 0..<15 {
                    let sub = "d\(a)/e\(b)"
                    entries.append(TarEntry.dir(sub, mode: b % 3 == 0 ? 0o750 : 0o755).with { $0.mtime = Double(1_600_000_000 + a * 100 + b) })
                    for c in 0..<4 {
                        let path = "\(sub)/f\(c)"
                        let bytes = Array("\(path) \(String(repeating: "x", count: (a * 31 + b * 7 + c) % 200))".utf8)
                        entries.append(.file(path, bytes, mode: c == 0 ? 0o600 : 0o644))
                        expected[path] = bytes
                    }
                    entries.append(.file("\(sub)/deep/er/still/leaf", "leaf \(a) \(b)"))
                    expected["\(sub)/deep/er/still/leaf"] = Array("leaf \(a) \(b)".utf8)
                }
                entries.append(.char("d\(a)/null", 1, 3))
            }
            // Later names of files first made elsewhere, some in a directory that sorts first.
            entries.append(.hardlink("a-links/to-d3", "d3/e2/f1"))
            entries.append(.hardlink("d11/e14/to-d0", "d0/e0/f0"))
            entries.append(.hardlink("d0/e0/again", "d0/e0/f0"))
            entries.append(.dir("ro", mode: 0o555))
            entries.append(.hardlink("ro/link", "d5/e5/f2"))
            let tar = dir + "/wide.tar"
            try makeTar(entries, at: tar)
            let tree = try ImageTree.build(layers: [(name: "l", index: try LayerIndexer.index(tarPath: tar, layer: "l"))])
            let out = dir + "/out"
            let skips = Skips()
            var unpacker = Unpacker(tree: tree, layers: try layerData([tar]))
            unpacker.writers = writers
            unpacker.parallelSecondPass = parallelSecondPass
            unpacker.onSkip = { path, _ in skips.items.append(path) }
            try unpacker.unpack(into: out)

            #expect(skips.items == (0..<12).map { "\(out)/d\($0)/null" }.sorted())
            for (path, bytes) in expected {
                #expect(try readFile(out + "/" + path) == bytes, "\(path)")
            }
            #expect(mode(out + "/d4/e3") == 0o750)
            #expect(mode(out + "/d4/e4") == 0o755)
            #expect(mode(out + "/d7/e1/f0") == 0o600)
            let first = try #require(lstatOf(out + "/d0/e0/f0"))
            #expect(first.st_nlink == 3)
            #expect(lstatOf(out + "/d11/e14/to-d0")?.st_ino == first.st_ino)
            #expect(lstatOf(out + "/d0/e0/again")?.st_ino == first.st_ino)
            #expect(lstatOf(out + "/a-links/to-d3")?.st_ino == lstatOf(out + "/d3/e2/f1")?.st_ino)
            #expect(lstatOf(out + "/ro/link")?.st_ino == lstatOf(out + "/d5/e5/f2")?.st_ino)
            #expect(mode(out + "/ro") == 0o555)
            #expect(lstatOf(out + "/d7/e9")?.st_mtim.tv_sec == 1_600_000_709, "set after its files and subdirectories")
            #expect(lstatOf(out + "/d7/e9/deep")?.st_mtim.tv_sec != nil)
            var count = 0
            let walker = FileManager.default.enumerator(atPath: out)
            while walker?.nextObject() != nil { count += 1 }
            #expect(count == 12 * (1 + 15 * (1 + 4 + 4)) + 1 + 3 + 2, "every directory, file and link, nothing else")
        }
    }

    @Test func refusesANonEmptyTarget() throws {
        try withTempDir { dir in
            let (tree, tars) = try image(in: dir)
            let out = dir + "/busy"
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
            try Data("mine".utf8).write(to: URL(fileURLWithPath: out + "/precious"))
            do {
                try Unpacker(tree: tree, layers: try layerData(tars)).unpack(into: out)
                Issue.record("unpacked into a non-empty directory")
            } catch let failure as Unpacker.Failure {
                #expect(failure.path == out)
                #expect(failure.reason.contains("not empty"))
            }
            #expect(list(out) == ["precious"])
            #expect(try readFile(out + "/precious") == Array("mine".utf8))
        }
    }

    @Test func refusesAFileAsTarget() throws {
        try withTempDir { dir in
            let (tree, tars) = try image(in: dir)
            let out = dir + "/file"
            try Data("x".utf8).write(to: URL(fileURLWithPath: out))
            #expect(throws: Unpacker.Failure.self) { try Unpacker(tree: tree, layers: try layerData(tars)).unpack(into: out) }
        }
    }

    @Test func missingLayerDataIsAnError() throws {
        try withTempDir { dir in
            let tar = dir + "/short.tar"
            try makeTar([.file("f", Array(repeating: 1, count: 4096))], at: tar)
            let index = try LayerIndexer.index(tarPath: tar, layer: "l")
            let tree = try ImageTree.build(layers: [(name: "l", index: index)])
            let bytes = try readFile(tar)
            try Data(bytes.prefix(Int(index.entries[0].dataOffset) + 100)).write(to: URL(fileURLWithPath: tar))
            #expect(throws: (any Error).self) { try Unpacker(tree: tree, layers: try layerData([tar])).unpack(into: dir + "/out") }
        }
    }
}

private func list(_ dir: String) -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() }

/// Test tars opened as the store would hand them out, a split tar's files beside it.
func layerData(_ tars: [String]) throws -> [LayerData] {
    try tars.map { tar in
        LayerData(file: try OpenFile.openRead(tar),
                  apart: ApartFiles(directory: (tar.hasSuffix(".tar") ? String(tar.dropLast(4)) : tar) + ".files"), sums: nil)
    }
}
