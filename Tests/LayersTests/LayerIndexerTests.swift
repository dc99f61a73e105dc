import TestSupport
import Foundation
import Layers
import Testing

@Suite("LayerIndexer")
struct LayerIndexerTests {
    /// Builds a tar from `entries` and indexes it; `body` also gets the tar's bytes.
    private func indexed(_ entries: [TarEntry], format: String = "pax",
                         _ body: (LayerIndex, [UInt8]) throws -> Void) throws {
        try withTempDir { dir in
            let tar = dir + "/layer.tar"
            try makeTar(entries, at: tar, format: format)
            let index = try LayerIndexer.index(tarPath: tar, layer: "sha256:test")
            try body(index, try readFile(tar))
        }
    }

    private func indexError(_ entries: [TarEntry], format: String = "pax") throws -> LayerError? {
        try withTempDir { dir in
            let tar = dir + "/layer.tar"
            try makeTar(entries, at: tar, format: format)
            do {
                let index = try LayerIndexer.index(tarPath: tar, layer: "sha256:test")
                Issue.record("indexed without error: \(index.entries.map(\.path))")
                return nil
            } catch let error as LayerError {
                return error
            }
        }
    }

    private func content(_ tar: [UInt8], _ e: LayerEntry) -> [UInt8] {
        let start = Int(e.dataOffset)
        guard start >= 0, start + Int(e.size) <= tar.count else { return [] }
        return Array(tar[start..<start + Int(e.size)])
    }

    @Test("data offsets point at file content", arguments: ["pax", "gnu", "ustar"])
    func dataOffsets(format: String) throws {
        let files: [(String, [UInt8])] = [
            ("a", Array("hello world".utf8)),
            ("dir/big", pseudoRandomBytes(200_000, seed: 1)),
            ("dir/empty", []),
            ("dir/odd", pseudoRandomBytes(513, seed: 2)),
            ("z", pseudoRandomBytes(70_000, seed: 3)),
        ]
        let entries = [TarEntry.dir("dir")] + files.map { TarEntry.file($0.0, $0.1) }
        try indexed(entries, format: format) { index, tar in
            #expect(index.entries.map(\.path) == ["dir"] + files.map(\.0))
            #expect(index.entries.map(\.kind) == [.directory] + Array(repeating: .regular, count: files.count))
            for (entry, (_, bytes)) in zip(index.entries.dropFirst(), files) {
                #expect(entry.size == Int64(bytes.count), "\(entry.path)")
                #expect(entry.dataOffset % 512 == 0, "\(entry.path)")
                #expect(content(tar, entry) == bytes, "\(entry.path) at \(entry.dataOffset)")
            }
        }
    }

    @Test func paxLongAndUnicodeNames() throws {
        let longDir = (0..<12).map { "directory\($0)" }.joined(separator: "/")
        let longName = longDir + "/" + String(repeating: "n", count: 180)
        let unicode = "données/ünïcødé-日本語.txt"
        let longTarget = String(repeating: "t/", count: 80) + "end"
        let entries: [TarEntry] = [
            .file(longName, "long"),
            .file(unicode, "uni"),
            .symlink("sym", longTarget),
        ]
        try indexed(entries) { index, tar in
            #expect(index.entries.map(\.path) == [longName, unicode, "sym"])
            #expect(content(tar, index.entries[0]) == Array("long".utf8))
            #expect(content(tar, index.entries[1]) == Array("uni".utf8))
            #expect(index.entries[2].linkTarget == longTarget)
        }
    }

    @Test func gnuLongNamesAndLinks() throws {
        let longName = String(repeating: "d/", count: 70) + "file-with-a-long-name"
        let longTarget = "/" + String(repeating: "x", count: 150)
        let entries: [TarEntry] = [
            .file(longName, "gnu"),
            .symlink("s", longTarget),
            .hardlink("h", longName),
        ]
        try indexed(entries, format: "gnu") { index, tar in
            #expect(index.entries.map(\.path) == [longName, "s", "h"])
            #expect(content(tar, index.entries[0]) == Array("gnu".utf8))
            #expect(index.entries[1].linkTarget == longTarget)
            #expect(index.entries[2].kind == .hardlink)
            #expect(index.entries[2].linkTarget == longName)
        }
    }

    @Test func entryKinds() throws {
        let entries: [TarEntry] = [
            .dir("./etc/"),
            .file("/etc/passwd", "root:x:0:0\n"),
            .symlink("lib", "../usr/lib"),
            .hardlink("etc/passwd-", "./etc/passwd"),
            .fifo("run/fifo", mode: 0o600),
            .char("dev/null", 1, 3),
            .block("dev/sda", 8, 16),
        ]
        try indexed(entries) { index, _ in
            let e = index.entries
            #expect(e.map(\.path) == ["etc", "etc/passwd", "lib", "etc/passwd-", "run/fifo", "dev/null", "dev/sda"])
            #expect(e.map(\.kind) == [.directory, .regular, .symlink, .hardlink, .fifo, .charDevice, .blockDevice])
            #expect(e[2].linkTarget == "../usr/lib")
            #expect(e[2].size == Int64("../usr/lib".utf8.count))
            #expect(e[3].linkTarget == "etc/passwd")
            #expect(e[4].mode == 0o600)
            #expect(e[5].deviceMajor == 1)
            #expect(e[5].deviceMinor == 3)
            #expect(e[6].deviceMajor == 8)
            #expect(e[6].deviceMinor == 16)
            #expect(e[6].mode == 0o660)
        }
    }

    @Test func modesOwnersAndTimes() throws {
        let entries: [TarEntry] = [
            TarEntry.file("setuid", "x", mode: 0o4755).with { $0.uid = 1000; $0.gid = 2000 },
            TarEntry.file("setgid", "x", mode: 0o2711),
            TarEntry.dir("tmp", mode: 0o1777),
            TarEntry.file("none", mode: 0o000),
            TarEntry.file("all", mode: 0o7777),
            TarEntry.file("bigids").with { $0.uid = 3_000_000; $0.gid = 4_000_000 },
            TarEntry.file("when").with { $0.mtime = 1_234_567_890 },
            TarEntry.file("fraction").with { $0.mtime = 1_700_000_000.25 },
        ]
        try indexed(entries) { index, _ in
            let byPath = Dictionary(uniqueKeysWithValues: index.entries.map { ($0.path, $0) })
            #expect(byPath["setuid"]?.mode == 0o4755)
            #expect(byPath["setuid"]?.uid == 1000)
            #expect(byPath["setuid"]?.gid == 2000)
            #expect(byPath["setgid"]?.mode == 0o2711)
            #expect(byPath["tmp"]?.mode == 0o1777)
            #expect(byPath["tmp"]?.kind == .directory)
            #expect(byPath["none"]?.mode == 0)
            #expect(byPath["all"]?.mode == 0o7777)
            #expect(byPath["bigids"]?.uid == 3_000_000)
            #expect(byPath["bigids"]?.gid == 4_000_000)
            #expect(byPath["when"]?.mtimeSeconds == 1_234_567_890)
            #expect(byPath["when"]?.mtimeNanoseconds == 0)
            #expect(byPath["fraction"]?.mtimeSeconds == 1_700_000_000)
            #expect(byPath["fraction"]?.mtimeNanoseconds == 250_000_000)
        }
    }

    @Test func xattrs() throws {
        let entries: [TarEntry] = [
            TarEntry.file("f", "data").with { $0.pax = ["SCHILY.xattr.user.x": "hello", "SCHILY.xattr.user.a": "1"] },
            TarEntry.dir("d").with { $0.pax = ["SCHILY.xattr.trusted.overlay.opaque": "y"] },
            TarEntry.file("plain", "p"),
        ]
        try indexed(entries) { index, tar in
            #expect(index.entries[0].xattrs == [Xattr(name: "user.a", value: Array("1".utf8)), Xattr(name: "user.x", value: Array("hello".utf8))])
            #expect(content(tar, index.entries[0]) == Array("data".utf8))
            #expect(index.entries[1].xattrs == [Xattr(name: "trusted.overlay.opaque", value: Array("y".utf8))])
            #expect(index.entries[2].xattrs == [])
        }
    }

    @Test func whiteouts() throws {
        let entries: [TarEntry] = [
            .dir("dir"),
            .file("dir/.wh.foo"),
            .file(".wh.top"),
            .file("./dir/sub/.wh..wh..opq"),
            .file(".wh..wh..opq"),
            .file("dir/.wh..hidden"),
        ]
        try indexed(entries) { index, _ in
            #expect(index.entries.map(\.path) == ["dir", "dir/foo", "top", "dir/sub", "", "dir/.hidden"])
            #expect(index.entries.map(\.kind) == [.directory, .whiteout, .whiteout, .opaque, .opaque, .whiteout])
        }
    }

    @Test("unsafe entries", arguments: [
        ([TarEntry.file("../escape", "x")], "../escape"),
        ([TarEntry.file("a/../../x", "x")], "a/../../x"),
        ([TarEntry.file("/../../etc/shadow", "x")], "/../../etc/shadow"),
        ([TarEntry.dir("../up")], "../up/"),  // tarfile writes directories with a trailing "/"
        ([TarEntry.symlink("../link", "/etc")], "../link"),
        ([TarEntry.file("x", "x"), TarEntry.hardlink("ok", "../x")], "ok"),
        ([TarEntry.file("x", "x"), TarEntry.hardlink("ok", "a/../../x")], "ok"),
        ([TarEntry.hardlink("root", "./")], "root"),
        ([TarEntry.file("dir/.wh.", "")], "dir/.wh."),
        ([TarEntry.file("dir/.wh..", "")], "dir/.wh.."),
        ([TarEntry.file(".", "not a directory")], "."),
    ])
    func unsafe(entries: [TarEntry], name: String) throws {
        let error = try indexError(entries)
        #expect(error?.kind == .unsafeEntry)
        #expect(error?.layer == "sha256:test")
        #expect(error?.detail.contains("\"\(name)\"") == true, "\(error?.detail ?? "no error")")
    }

    @Test func rootDirectoryEntry() throws {
        try indexed([.dir("./", mode: 0o700), .file("./a", "x")]) { index, _ in
            #expect(index.entries.map(\.path) == ["", "a"])
            #expect(index.entries[0].kind == .directory)
            #expect(index.entries[0].mode == 0o700)
        }
    }

    @Test func emptyFileHasNoEntries() throws {
        try withTempDir { dir in
            try writeFile([], to: dir + "/empty.tar")
            #expect(try LayerIndexer.index(tarPath: dir + "/empty.tar", layer: "l").entries == [])
        }
    }

    @Test func emptyArchiveHasNoEntries() throws {
        try indexed([]) { index, tar in
            #expect(tar.count >= 1024)
            #expect(index.entries == [])
        }
    }

    @Test func garbageIsMalformed() throws {
        try withTempDir { dir in
            try writeFile(pseudoRandomBytes(10_000), to: dir + "/garbage.tar")
            do {
                _ = try LayerIndexer.index(tarPath: dir + "/garbage.tar", layer: "sha256:garbage")
                Issue.record("indexed garbage")
            } catch let error as LayerError {
                #expect(error.kind == .malformed)
                #expect(error.description.contains("sha256:garbage"))
            }
        }
    }

    @Test func truncatedTarIsMalformed() throws {
        try withTempDir { dir in
            let tar = dir + "/t.tar"
            try makeTar([.file("a", pseudoRandomBytes(5000)), .file("b", pseudoRandomBytes(20_000))], at: tar)
            let bytes = try readFile(tar)
            try writeFile(Array(bytes.prefix(9000)), to: tar)
            do {
                let index = try LayerIndexer.index(tarPath: tar, layer: "l")
                Issue.record("indexed a truncated tar: \(index.entries.map { ($0.path, $0.dataOffset, $0.size) })")
            } catch let error as LayerError {
                #expect(error.kind == .malformed)
            }
        }
    }

    @Test func missingFileIsIO() {
        do {
            _ = try LayerIndexer.index(tarPath: "/nonexistent/imgvol/layer.tar", layer: "l")
            Issue.record("indexed a missing file")
        } catch {
            #expect(error.kind == .io)
        }
    }
}
