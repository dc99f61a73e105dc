import Foundation
import OCI
import Testing

private let hexA = String(repeating: "a", count: 64)
private let digestA = "sha256:" + hexA

@Suite("Reference")
struct ReferenceTests {
    @Test("normalises like docker", arguments: [
        ("alpine", "docker.io/library/alpine:latest"),
        ("alpine:3.20", "docker.io/library/alpine:3.20"),
        ("library/alpine", "docker.io/library/alpine:latest"),
        ("docker.io/x", "docker.io/library/x:latest"),
        ("docker.io/library/alpine", "docker.io/library/alpine:latest"),
        ("index.docker.io/x", "docker.io/library/x:latest"),
        ("registry-1.docker.io/x/y:1", "docker.io/x/y:1"),
        ("user/repo", "docker.io/user/repo:latest"),
        ("quay.io/x", "quay.io/x:latest"),
        ("localhost/x", "localhost/x:latest"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        ("localhost:5000/x:v1", "localhost:5000/x:v1"),
        ("127.0.0.1:5000/a/b:tag@" + digestA, "127.0.0.1:5000/a/b:tag@" + digestA),
        ("alpine@" + digestA, "docker.io/library/alpine@" + digestA),
        ("a/b/c/d", "docker.io/a/b/c/d:latest"),
        ("ex-ample.com/a__b/c-d--e/f.g_h:T_a.g-1", "ex-ample.com/a__b/c-d--e/f.g_h:T_a.g-1"),
        ("[::1]:5000/x", "[::1]:5000/x:latest"),
    ])
    func normalises(input: String, expected: String) throws {
        let ref = try Reference(input)
        #expect(ref.description == expected)
    }

    @Test func components() throws {
        let ref = try Reference("127.0.0.1:5000/a/b:tag@" + digestA)
        #expect(ref.registry == "127.0.0.1:5000")
        #expect(ref.repository == "a/b")
        #expect(ref.tag == "tag")
        #expect(ref.digest == (try Digest(digestA)))
        #expect(ref.name == "127.0.0.1:5000/a/b")
        #expect(ref.manifestReference == digestA)
    }

    @Test func defaultsTagOnlyWithoutDigest() throws {
        let tagged = try Reference("alpine")
        #expect(tagged.registry == "docker.io")
        #expect(tagged.repository == "library/alpine")
        #expect(tagged.tag == "latest")
        #expect(tagged.digest == nil)
        #expect(tagged.manifestReference == "latest")

        let pinned = try Reference("alpine@" + digestA)
        #expect(pinned.tag == nil)
        #expect(pinned.manifestReference == digestA)
    }

    @Test("rejects", arguments: [
        "",
        "Alpine",
        "docker.io/Alpine",
        "quay.io/Org/x",
        "a:b:c",
        "alpine:",
        ":tag",
        "alpine:.tag",
        "alpine:-tag",
        "alpine:t@g",
        "alpine:" + String(repeating: "t", count: 129),
        "alpine@sha256:abc",
        "alpine@sha256:" + String(repeating: "A", count: 64),
        "alpine@md5:" + String(repeating: "a", count: 32),
        "alpine@" + hexA,
        "a//b",
        "/a",
        "a/",
        "a..b",
        "a___b",
        "a._b",
        "-a",
        "a-",
        "has space",
        "tab\tname",
        "ex_ample.com/x",
        "example.com:0/x",
        "example.com:65536/x",
        "example.com:/x",
        "example.com:12a/x",
        "-example.com/x",
        "example..com/x",
        "Ünïcode.com/x",
    ])
    func rejects(input: String) {
        #expect(throws: OCIError.self) { try Reference(input) }
        do {
            _ = try Reference(input)
        } catch {
            #expect(error.kind == .invalidReference)
            #expect(error.input == input)
        }
    }

    @Test func tagLengthBoundary() throws {
        let tag = "a" + String(repeating: "-", count: 127)
        #expect(tag.count == 128)
        #expect(try Reference("alpine:" + tag).tag == tag)
    }

    @Test func nameLengthLimit() throws {
        // docker.io/ (10) + library/ (8) is added before the 255 limit applies.
        let ok = String(repeating: "a", count: 255 - "docker.io/library/".count)
        #expect(try Reference(ok).repository == "library/" + ok)
        #expect(throws: OCIError.self) { try Reference(ok + "a") }
    }

    @Test("description round trips", arguments: [
        "docker.io/library/alpine:latest",
        "localhost:5000/x:v1",
        "127.0.0.1:5000/a/b:tag@" + digestA,
        "quay.io/org/app@" + digestA,
        "ghcr.io/a/b/c:1.2.3",
    ])
    func roundTrip(text: String) throws {
        let ref = try Reference(text)
        #expect(ref.description == text)
        #expect(try Reference(ref.description) == ref)
    }

    @Test func codableUsesTheString() throws {
        let ref = try Reference("alpine:3")
        let data = try JSONEncoder().encode([ref])
        #expect(String(decoding: data, as: UTF8.self) == #"["docker.io\/library\/alpine:3"]"#)
        #expect(try JSONDecoder().decode([Reference].self, from: data) == [ref])
        #expect(throws: DecodingError.self) { try JSONDecoder().decode([Reference].self, from: Data(#"["A:b:c"]"#.utf8)) }
    }

    @Test func withDigestAndRegistry() throws {
        let ref = try Reference("alpine:3")
        let d = try Digest(digestA)
        #expect(ref.withDigest(d).description == "docker.io/library/alpine:3@" + digestA)
        #expect(ref.withRegistry("mirror.local:5000", repository: "cache/alpine").description == "mirror.local:5000/cache/alpine:3")
    }

    @Test func errorMessageNamesInputAndTag() {
        do {
            _ = try Reference("alpine:-bad")
            Issue.record("expected an error")
        } catch {
            #expect(error.description.contains("\"alpine:-bad\""))
            #expect(error.description.contains("tag \"-bad\""))
        }
    }
}
