import TestSupport
import Layers
import Testing

@Suite("TarPath")
struct TarPathTests {
    @Test("normalize", arguments: [
        ("./a/b", "a/b"),
        ("/abs/x", "abs/x"),
        ("a/../b", "b"),
        (".", ""),
        ("./", ""),
        ("/", ""),
        ("", ""),
        ("a//b/", "a/b"),
        ("a/./b/.", "a/b"),
        ("a/b/..", "a"),
        ("a/b/../../c", "c"),
        ("dir/", "dir"),
        ("...", "..."),
        ("..a/b..", "..a/b.."),
        (".wh..wh..opq", ".wh..wh..opq"),
        ("a/.../b", "a/.../b"),
        ("a/b.", "a/b."),
        ("é/ü/ß", "é/ü/ß"),
        ("é//ü/./", "é/ü"),
        ("a/.", "a"),
        ("./a", "a"),
        ("a/\u{301}b", "a/\u{301}b"),
        ("a/\u{301}/../b", "a/b"),
    ])
    func normalize(raw: String, expected: String) throws {
        #expect(try TarPath.normalize(raw) == expected)
    }

    @Test("escaping the root throws", arguments: ["..", "../x", "/../x", "a/../../x", "./../x", "a/b/../../../c", "../",
                                                  "../\u{301}x", "a/../../\u{301}x", "./..//\u{301}"])
    func escapes(raw: String) {
        #expect(throws: TarPath.Problem.escapesRoot) { try TarPath.normalize(raw) }
    }

    @Test func parentAndBase() {
        #expect(TarPath.parent("a/b/c") == "a/b")
        #expect(TarPath.parent("a") == "")
        #expect(TarPath.base("a/b/c") == "c")
        #expect(TarPath.base("a") == "a")
        #expect(TarPath.parent("é/ü/ß") == "é/ü")
        #expect(TarPath.base("é/ü/ß") == "ß")
        #expect(TarPath.base("dir/") == "")
    }
}
