import Foundation
import OCI
import Testing

@Suite("Digest")
struct DigestTests {
    @Test("known sha256 vectors", arguments: [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("hello world", "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"),
    ])
    func knownVectors(input: String, hex: String) throws {
        let d = Digest.of(Array(input.utf8))
        #expect(d.hex == hex)
        #expect(d.description == "sha256:" + hex)
        #expect(d.short == String(hex.prefix(12)))
        #expect(try Digest("sha256:" + hex) == d)
        #expect(try Digest(hex: hex) == d)
    }

    @Test func incrementalEqualsOneShot() {
        let bytes = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        var hasher = DigestHasher()
        hasher.update(Array(bytes[0..<1]))
        hasher.update(Array(bytes[1..<4096]))
        hasher.update([])
        bytes[4096...].withUnsafeBytes { hasher.update($0) }
        #expect(hasher.count == 100_000)
        #expect(hasher.finalize() == Digest.of(bytes))
        #expect(DigestHasher().finalize().hex == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test("rejects", arguments: [
        "",
        "sha256",
        "sha256:",
        "sha256:" + String(repeating: "a", count: 63),
        "sha256:" + String(repeating: "a", count: 65),
        "sha256:" + String(repeating: "A", count: 64),
        "sha256:" + String(repeating: "g", count: 64),
        "SHA256:" + String(repeating: "a", count: 64),
        "sha512:" + String(repeating: "a", count: 128),
        "md5:" + String(repeating: "a", count: 32),
        ":" + String(repeating: "a", count: 64),
        String(repeating: "a", count: 64),
        "sha256:" + String(repeating: "a", count: 63) + "\n",
        "sha256:../../" + String(repeating: "a", count: 58),
    ])
    func rejects(text: String) {
        #expect(throws: OCIError.self) { try Digest(text) }
        do { _ = try Digest(text) } catch { #expect(error.kind == .invalidDigest) }
    }

    @Test func unsupportedAlgorithmIsNamed() {
        do {
            _ = try Digest("sha512:" + String(repeating: "a", count: 128))
            Issue.record("expected an error")
        } catch {
            #expect(error.reason.contains("sha512"))
        }
    }

    @Test func comparesByHex() throws {
        let a = try Digest(hex: String(repeating: "0", count: 64))
        let b = try Digest(hex: String(repeating: "f", count: 64))
        #expect(a < b)
        #expect([b, a].sorted() == [a, b])
    }

    @Test func codable() throws {
        let d = Digest.of(Array("abc".utf8))
        let data = try JSONEncoder().encode(["d": d])
        #expect(try JSONDecoder().decode([String: Digest].self, from: data) == ["d": d])
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode([Digest].self, from: Data(#"["sha256:xyz"]"#.utf8))
        }
    }
}
