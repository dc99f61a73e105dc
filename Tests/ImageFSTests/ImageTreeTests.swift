import TestSupport
import ImageFS
import Layers
import Testing

func e(_ path: String, _ kind: EntryKind = .regular, mode: UInt32? = nil, uid: UInt32 = 0, gid: UInt32 = 0,
               mtime: Int64 = 0, size: Int64 = 0, offset: Int64 = 0, link: String = "") -> LayerEntry {
    LayerEntry(path: path, kind: kind, mode: mode ?? (kind == .directory ? 0o755 : 0o644), uid: uid, gid: gid,
               mtimeSeconds: mtime, size: size, dataOffset: offset, linkTarget: link)
}

private func build(_ layers: [[LayerEntry]]) throws(LayerError) -> ImageTree {
    try ImageTree.build(layers: layers.enumerated().map { (name: "layer\($0.offset)", index: LayerIndex(entries: $0.element)) })
}

private func buildError(_ layers: [[LayerEntry]]) -> LayerError? {
    do {
        let tree = try build(layers)
        Issue.record("built without error: \(tree.paths)")
        return nil
    } catch {
        return error
    }
}

extension ImageTree {
    var paths: [String] {
        var result: [String] = []
        walk { path, _ in result.append(path) }
        return result
    }

    func node(_ path: String) -> Inode? { resolve(path).flatMap { inode($0) } }

    func names(_ path: String) -> [String] { node(path)?.children.map(\.name) ?? [] }
}

@Suite("ImageTree.build")
struct ImageTreeTests {
    @Test func singleLayer() throws {
        let tree = try build([[e("etc", .directory), e("etc/hosts", size: 10, offset: 512), e("bin", .directory)]])
        #expect(tree.paths == ["", "bin", "etc", "etc/hosts"])
        #expect(tree.root.kind == .directory)
        #expect(tree.root.mode == 0o755)
        let hosts = try #require(tree.node("etc/hosts"))
        #expect(hosts.kind == .regular)
        #expect(hosts.size == 10)
        #expect(hosts.dataOffset == 512)
        #expect(hosts.layer == 0)
        #expect(hosts.nlink == 1)
        #expect(tree.node("etc")?.size == 4096)
        #expect(tree.totalSize == 10)
    }

    @Test func whiteoutRemovesALowerFile() throws {
        let lower = [e("etc", .directory), e("etc/a", size: 1), e("etc/b", size: 2)]
        let tree = try build([lower, [e("etc/a", .whiteout)]])
        #expect(tree.paths == ["", "etc", "etc/b"])
        #expect(tree.totalSize == 2)
    }

    @Test func whiteoutRemovesALowerDirectoryWithItsSubtree() throws {
        let tree = try build([[e("d", .directory), e("d/x/y", size: 1), e("keep")], [e("d", .whiteout)]])
        #expect(tree.paths == ["", "keep"])
        #expect(tree.inodes.count == 2)
    }

    @Test func whiteoutHidesOnlyLowerLayers() throws {
        let tree = try build([[e("x", size: 1)], [e("x", size: 5), e("x", .whiteout)]])
        #expect(tree.paths == ["", "x"])
        #expect(tree.node("x")?.size == 5)
        #expect(tree.node("x")?.layer == 1)
    }

    @Test func whiteoutOfAMissingPathIsHarmless() throws {
        let tree = try build([[e("a")], [e("nope/x", .whiteout), e("b", .whiteout)]])
        #expect(tree.paths == ["", "a"])
    }

    @Test func whiteoutNeverReachesThroughASymlink() throws {
        let tree = try build([[e("real", .directory), e("real/f"), e("link", .symlink, link: "real")], [e("link/f", .whiteout)]])
        #expect(tree.paths == ["", "link", "real", "real/f"])
    }

    @Test("opaque directory hides lower children, keeps its own", arguments: [false, true])
    func opaque(markerLast: Bool) throws {
        let lower = [e("d", .directory), e("d/old"), e("d/sub", .directory), e("d/sub/deep"), e("other")]
        var upper = [e("d", .directory, mode: 0o700), e("d/new", size: 3)]
        if markerLast { upper.append(e("d", .opaque)) } else { upper.insert(e("d", .opaque), at: 1) }
        let tree = try build([lower, upper])
        #expect(tree.paths == ["", "d", "d/new", "other"])
        #expect(tree.node("d")?.mode == 0o700)
        #expect(tree.node("d/new")?.layer == 1)
    }

    @Test func opaqueWithoutARedeclaredDirectory() throws {
        let tree = try build([[e("d", .directory), e("d/old")], [e("d", .opaque), e("d/new")]])
        #expect(tree.paths == ["", "d", "d/new"])
    }

    @Test func fileReplacingADirectoryDropsItsSubtree() throws {
        let lower = [e("d", .directory), e("d/f", size: 100), e("d/sub", .directory), e("d/sub/g", size: 200)]
        let tree = try build([lower, [e("d", size: 7, offset: 1024)]])
        #expect(tree.paths == ["", "d"])
        let d = try #require(tree.node("d"))
        #expect(d.kind == .regular)
        #expect(d.children.isEmpty)
        #expect(d.size == 7)
        #expect(d.layer == 1)
        #expect(tree.resolve("d/f") == nil)
        #expect(tree.inodes.count == 2)
        #expect(tree.totalSize == 7)
        #expect(tree.root.nlink == 2)
    }

    @Test func symlinkReplacingADirectory() throws {
        let tree = try build([[e("d", .directory), e("d/f")], [e("d", .symlink, link: "/elsewhere")]])
        #expect(tree.paths == ["", "d"])
        #expect(tree.node("d")?.kind == .symlink)
        #expect(tree.node("d")?.linkTarget == "/elsewhere")
    }

    @Test func directoryOverADirectoryKeepsChildrenAndTakesAttributes() throws {
        let lower = [e("d", .directory, mode: 0o755, uid: 0, gid: 0, mtime: 1), e("d/f", size: 1)]
        let upper = [e("d", .directory, mode: 0o700, uid: 5, gid: 6, mtime: 9), e("d/g", size: 2)]
        let tree = try build([lower, upper])
        #expect(tree.paths == ["", "d", "d/f", "d/g"])
        let d = try #require(tree.node("d"))
        #expect(d.mode == 0o700)
        #expect(d.uid == 5)
        #expect(d.gid == 6)
        #expect(d.mtimeSeconds == 9)
        #expect(d.layer == 1)
        #expect(tree.node("d/f")?.layer == 0)
    }

    @Test func directoryReplacingAFile() throws {
        let tree = try build([[e("d", size: 9)], [e("d", .directory, mode: 0o711)]])
        #expect(tree.node("d")?.kind == .directory)
        #expect(tree.node("d")?.mode == 0o711)
        #expect(tree.names("d") == [])
        #expect(tree.totalSize == 0)
    }

    @Test func rootEntryUpdatesTheRoot() throws {
        let tree = try build([[e("", .directory, mode: 0o700, uid: 3, mtime: 42), e("a")]])
        #expect(tree.root.mode == 0o700)
        #expect(tree.root.uid == 3)
        #expect(tree.root.mtimeSeconds == 42)
        #expect(tree.paths == ["", "a"])
    }

    @Test func hardlinksShareOneInode() throws {
        let tree = try build([
            [e("a", size: 3, offset: 512), e("b", .hardlink, link: "a"), e("d/c", .hardlink, link: "a")],
            [e("e", .hardlink, link: "a")],
        ])
        let a = try #require(tree.resolve("a"))
        #expect(tree.resolve("b") == a)
        #expect(tree.resolve("d/c") == a)
        #expect(tree.resolve("e") == a)
        let inode = try #require(tree.inode(a))
        #expect(inode.kind == .regular)
        #expect(inode.nlink == 4)
        #expect(inode.size == 3)
        #expect(inode.dataOffset == 512)
        #expect(inode.layer == 0)
        #expect(tree.totalSize == 3)
        // root, a, d: b, d/c and e are names, not inodes.
        #expect(tree.inodes.count == 3)
    }

    @Test func hardlinkSurvivesWhiteoutOfItsTarget() throws {
        let tree = try build([[e("a", size: 3), e("b", .hardlink, link: "a")], [e("a", .whiteout)]])
        #expect(tree.paths == ["", "b"])
        #expect(tree.node("b")?.kind == .regular)
        #expect(tree.node("b")?.nlink == 1)
        #expect(tree.node("b")?.size == 3)
    }

    @Test func hardlinkToASymlink() throws {
        let tree = try build([[e("s", .symlink, link: "t"), e("h", .hardlink, link: "s")]])
        #expect(tree.resolve("h") == tree.resolve("s"))
        #expect(tree.node("h")?.kind == .symlink)
        #expect(tree.node("h")?.nlink == 2)
    }

    @Test("dangling hardlinks", arguments: [
        [[e("h", .hardlink, link: "missing")]],
        [[e("dir", .directory), e("h", .hardlink, link: "dir")]],
        [[e("real", .directory), e("real/f"), e("s", .symlink, link: "real"), e("h", .hardlink, link: "s/f")]],
        [[e("a")], [e("a", .whiteout), e("h", .hardlink, link: "a")]],
    ])
    func danglingHardlink(layers: [[LayerEntry]]) {
        let error = buildError(layers)
        #expect(error?.kind == .danglingHardlink)
        #expect(error?.detail.contains("\"h\"") == true)
    }

    @Test func inodeNumberingIsDepthFirstOverSortedNames() throws {
        let layers = [[e("b"), e("a/x"), e("A"), e("a/B", .directory), e("a/B/z"), e("ä")]]
        let tree = try build(layers)
        var numbered: [String] = []
        tree.walk { path, index in numbered.append("\(index):\(path)") }
        #expect(numbered == ["0:", "1:A", "2:a", "3:a/B", "4:a/B/z", "5:a/x", "6:b", "7:ä"])
        #expect(ImageTree.rootIndex == 0)
        #expect(tree.root.parent == 0)
        #expect(tree.node("a")?.parent == 0)
        #expect(tree.node("a/B")?.parent == 2)
        #expect(tree.node("a/B/z")?.parent == 3)
    }

    @Test func lookupFindsNamesThatPrefixOrSortNearEachOther() throws {
        let names = ["a", "ab", "a.b", "a b", "B", "é", "e", "ée", "z", ""]
        let tree = try build([names.filter { !$0.isEmpty }.map { e("d/" + $0) }])
        let dir = try #require(tree.resolve("d"))
        for name in names where !name.isEmpty {
            #expect(tree.lookup(dir, name).flatMap { tree.inode($0) }?.kind == .regular, "\(name)")
        }
        for missing in ["", "a.", "abc", "é\u{301}", "Z", "zz"] {
            #expect(tree.lookup(dir, missing) == nil, "\(missing)")
        }
        #expect(tree.names("d") == ["B", "a", "a b", "a.b", "ab", "e", "z", "é", "ée"])
    }

    @Test func numberingIsDeterministic() throws {
        let layers = [
            (0..<200).map { e("dir\($0 % 7)/file\($0)", size: Int64($0)) } + [e("l", .symlink, link: "x")],
            [e("dir3", .whiteout), e("h", .hardlink, link: "dir1/file1"), e("dir2", .opaque), e("dir2/new")],
        ]
        func snapshot(_ tree: ImageTree) -> [String] {
            var out: [String] = []
            tree.walk { path, index in
                let n = tree.inode(index)!
                out.append("\(index) \(path) \(n.kind) \(n.size) \(n.nlink) \(n.parent) \(n.layer)")
            }
            return out
        }
        let first = snapshot(try build(layers))
        let second = snapshot(try build(layers))
        #expect(first == second)
        #expect(first.first == "0  directory 4096 8 0 -1")
    }

    @Test func directoryLinkCounts() throws {
        let tree = try build([[e("a", .directory), e("b", .directory), e("b/c", .directory), e("f")]])
        #expect(tree.root.nlink == 4)
        #expect(tree.node("a")?.nlink == 2)
        #expect(tree.node("b")?.nlink == 3)
        #expect(tree.node("f")?.nlink == 1)
    }

    @Test func lookupAndResolve() throws {
        let tree = try build([[e("b"), e("a/x"), e("A"), e("s", .symlink, link: "a")]])
        // 0 root, 1 A, 2 a, 3 a/x, 4 b, 5 s
        #expect(tree.lookup(0, "a") == 2)
        #expect(tree.lookup(0, "A") == 1)
        #expect(tree.lookup(0, "b") == 4)
        #expect(tree.lookup(0, "s") == 5)
        #expect(tree.lookup(2, "x") == 3)
        #expect(tree.lookup(0, "zzz") == nil)
        #expect(tree.lookup(0, "") == nil)
        #expect(tree.lookup(1, "x") == nil, "a file has no children")
        #expect(tree.lookup(99, "a") == nil)

        #expect(tree.resolve("") == 0)
        #expect(tree.resolve("a/x") == 3)
        #expect(tree.resolve("./a//x/") == 3)
        #expect(tree.resolve("a/../b") == 4)
        #expect(tree.resolve("../../a") == 2)
        #expect(tree.resolve("A/x") == nil)
        #expect(tree.resolve("s/x") == nil, "resolve does not follow symlinks")
        #expect(tree.resolve("nope") == nil)
        #expect(tree.inode(6) == nil)
    }

    @Test func lookupInALargeDirectory() throws {
        let names = (0..<500).map { "f\($0)" }
        let tree = try build([names.map { e($0) }])
        for name in names {
            let index = try #require(tree.lookup(0, name), "\(name)")
            #expect(tree.root.children.first { $0.inode == index }?.name == name)
        }
        #expect(tree.lookup(0, "f500") == nil)
    }

    @Test("entries under a symlinked parent are refused", arguments: [
        [[e("link", .symlink, link: "/etc")], [e("link/passwd")]],
        [[e("link", .symlink, link: "/etc"), e("link/passwd")]],
        [[e("d", .directory), e("d/link", .symlink, link: "../..")], [e("d/link/x/y", .directory)]],
    ])
    func symlinkedParent(layers: [[LayerEntry]]) {
        let error = buildError(layers)
        #expect(error?.kind == .unsafeEntry)
        #expect(error?.detail.contains("symlink") == true)
    }

    @Test func entryUnderAFileIsRefused() {
        let error = buildError([[e("f")], [e("f/x")]])
        #expect(error?.kind == .unsafeEntry)
        #expect(error?.layer == "layer1")
    }

    @Test func implicitParentsAreCreated0755() throws {
        let tree = try build([[e("x/y/z", mode: 0o600, uid: 7, gid: 8, size: 1)]])
        #expect(tree.paths == ["", "x", "x/y", "x/y/z"])
        for path in ["x", "x/y"] {
            let d = try #require(tree.node(path))
            #expect(d.kind == .directory)
            #expect(d.mode == 0o755)
            #expect(d.uid == 0)
            #expect(d.gid == 0)
        }
        #expect(tree.node("x/y/z")?.mode == 0o600)
        #expect(tree.node("x/y/z")?.uid == 7)
        #expect(tree.node("x/y/z")?.gid == 8)
    }

    @Test func implicitParentTakesAttributesWhenDeclaredLater() throws {
        let tree = try build([[e("x/f"), e("x", .directory, mode: 0o750, uid: 1)]])
        #expect(tree.node("x")?.mode == 0o750)
        #expect(tree.node("x")?.uid == 1)
        #expect(tree.names("x") == ["f"])
    }

    @Test func specialFilesKeepTheirAttributes() throws {
        var dev = e("dev/null", .charDevice, mode: 0o666)
        dev.deviceMajor = 1
        dev.deviceMinor = 3
        var file = e("f", size: 4)
        file.xattrs = [Xattr(name: "user.k", value: [1, 2])]
        file.mtimeNanoseconds = 5
        let tree = try build([[dev, file, e("p", .fifo, mode: 0o600)]])
        #expect(tree.node("dev/null")?.kind == .charDevice)
        #expect(tree.node("dev/null")?.deviceMajor == 1)
        #expect(tree.node("dev/null")?.deviceMinor == 3)
        #expect(tree.node("f")?.xattrs == [Xattr(name: "user.k", value: [1, 2])])
        #expect(tree.node("f")?.mtimeNanoseconds == 5)
        #expect(tree.node("p")?.kind == .fifo)
        #expect(tree.node("p")?.mode == 0o600)
    }
}
