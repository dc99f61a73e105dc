import Foundation
import OCI
import Testing

@Suite("Platform")
struct PlatformTests {
    @Test("parses and normalises", arguments: [
        ("linux/amd64", "linux", "amd64", nil as String?),
        ("linux/x86_64", "linux", "amd64", nil),
        ("linux/x86-64", "linux", "amd64", nil),
        ("linux/aarch64", "linux", "arm64", nil),
        ("linux/arm64/v8", "linux", "arm64", "v8"),
        ("linux/arm64/8", "linux", "arm64", "v8"),
        ("linux/aarch64/8", "linux", "arm64", "v8"),
        ("linux/arm/v7", "linux", "arm", "v7"),
        ("linux/arm/7", "linux", "arm", "v7"),
        ("linux/armhf", "linux", "arm", "v7"),
        ("linux/armel", "linux", "arm", "v6"),
        ("Linux/AMD64", "linux", "amd64", nil),
        ("linux/s390x", "linux", "s390x", nil),
    ])
    func parses(text: String, os: String, arch: String, variant: String?) throws {
        let p = try Platform(parsing: text)
        #expect(p.os == os)
        #expect(p.architecture == arch)
        #expect(p.variant == variant)
    }

    @Test("rejects", arguments: ["", "linux", "linux/", "/amd64", "linux//v8", "a/b/c/d", "linux/arm64/"])
    func rejects(text: String) {
        #expect(throws: OCIError.self) { try Platform(parsing: text) }
        do { _ = try Platform(parsing: text) } catch { #expect(error.kind == .invalidPlatform) }
    }

    @Test func description() {
        #expect(Platform(os: "linux", architecture: "arm", variant: "v7").description == "linux/arm/v7")
        #expect(Platform(os: "linux", architecture: "amd64").description == "linux/amd64")
    }

    @Test("matches", arguments: [
        ("linux/arm64", "linux/arm64/v8", true),
        ("linux/arm64/v8", "linux/arm64", true),
        ("linux/arm64/v8", "linux/aarch64", true),
        ("linux/amd64", "linux/x86_64", true),
        ("linux/arm/v7", "linux/arm/v7", true),
        ("linux/arm/v7", "linux/arm/v6", false),
        ("linux/arm/v7", "linux/arm64/v8", false),
        ("linux/amd64", "windows/amd64", false),
        ("linux/amd64", "linux/arm64", false),
    ])
    func matches(want: String, have: String, expected: Bool) throws {
        let w = try Platform(parsing: want)
        let h = try Platform(parsing: have)
        #expect(w.matches(h) == expected)
    }

    @Test func matchesNormalisesUnparsedCandidate() {
        let want = Platform(os: "linux", architecture: "amd64")
        #expect(want.matches(Platform(os: "linux", architecture: "x86_64")))
        #expect(Platform(os: "linux", architecture: "arm", variant: "v7").matches(Platform(os: "linux", architecture: "arm", variant: "7")))
    }

    @Test func codingKeys() throws {
        let json = #"{"os":"windows","architecture":"amd64","os.version":"10.0.17763.1","os.features":["win32k"]}"#
        let p = try JSONDecoder().decode(Platform.self, from: Data(json.utf8))
        #expect(p.osVersion == "10.0.17763.1")
        #expect(p.osFeatures == ["win32k"])
        #expect(p.variant == nil)
    }
}

@Suite("Index.manifest(for:)")
struct IndexSelectionTests {
    static func desc(_ n: Int, _ platform: Platform?, type: String = MediaType.ociManifest) -> Descriptor {
        Descriptor(mediaType: type, digest: Digest.of([UInt8(n)]), size: Int64(n), platform: platform)
    }

    /// Index has no public memberwise init: build it the way it arrives, as JSON.
    static func makeIndex(_ manifests: [Descriptor], type: String = MediaType.ociIndex) -> Index {
        struct Wire: Encodable { var schemaVersion = 2; var mediaType: String; var manifests: [Descriptor] }
        let data = try! JSONEncoder().encode(Wire(mediaType: type, manifests: manifests))
        return try! JSONDecoder().decode(Index.self, from: data)
    }

    static let index = makeIndex([
        desc(0, nil),
        desc(1, Platform(os: "linux", architecture: "amd64")),
        desc(2, Platform(os: "linux", architecture: "arm", variant: "v6")),
        desc(3, Platform(os: "linux", architecture: "arm", variant: "v7")),
        desc(4, Platform(os: "linux", architecture: "arm64", variant: "v8")),
        desc(5, Platform(os: "unknown", architecture: "unknown")),
        desc(6, Platform(os: "linux", architecture: "ppc64le"), type: "application/vnd.in-toto+json"),
    ])

    @Test("chooses", arguments: [
        ("linux/amd64", 1),
        ("linux/x86_64", 1),
        ("linux/arm64", 4),
        ("linux/arm64/v8", 4),
        ("linux/aarch64", 4),
        ("linux/arm/v7", 3),
        ("linux/arm/v6", 2),
    ])
    func chooses(platform: String, expected: Int) throws {
        let chosen = Self.index.manifest(for: try Platform(parsing: platform))
        #expect(chosen?.size == Int64(expected))
    }

    @Test("finds nothing", arguments: ["linux/s390x", "linux/ppc64le", "windows/amd64", "linux/arm/v5"])
    func none(platform: String) throws {
        #expect(Self.index.manifest(for: try Platform(parsing: platform)) == nil)
    }

    @Test func prefersExactVariant() throws {
        let index = Self.makeIndex([
            Self.desc(1, Platform(os: "linux", architecture: "arm64")),
            Self.desc(2, Platform(os: "linux", architecture: "arm64", variant: "v8")),
        ])
        #expect(index.manifest(for: try Platform(parsing: "linux/arm64/v8"))?.size == 2)
        #expect(index.manifest(for: try Platform(parsing: "linux/arm64"))?.size == 1)
    }

    @Test func nestedIndexEntriesAreCandidates() throws {
        let index = Self.makeIndex([
            Self.desc(7, Platform(os: "linux", architecture: "amd64"), type: MediaType.dockerManifest),
        ], type: MediaType.dockerManifestList)
        #expect(index.manifest(for: try Platform(parsing: "linux/amd64"))?.size == 7)
        #expect(index.platforms == [Platform(os: "linux", architecture: "amd64")])
    }
}
