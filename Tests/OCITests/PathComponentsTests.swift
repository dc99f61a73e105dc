import OCI
import Testing

@Suite("PathComponents")
struct PathComponentsTests {
    @Test("split on the slash byte", arguments: [
        ("a/b", ["a", "b"]),
        ("/a//b/", ["a", "b"]),
        ("", []),
        ("/", []),
        ("é/ü", ["é", "ü"]),
        // A combining mark after "/" is one Character with it; the split still sees the "/".
        ("../\u{301}x", ["..", "\u{301}x"]),
        ("a/\u{301}", ["a", "\u{301}"]),
    ])
    func split(path: String, parts: [String]) {
        let got = PathComponents.split(path).map(String.init)
        #expect(got.map { Array($0.utf8) } == parts.map { Array($0.utf8) })
    }

    @Test func dotsAreComparedByteForByte() {
        #expect(PathComponents.isParent(".."))
        #expect(PathComponents.isCurrent("."))
        #expect(!PathComponents.isParent("..\u{301}"))
        #expect(!PathComponents.isCurrent(".\u{301}"))
        #expect(!PathComponents.isParent("..."))
    }
}
