/// An image manifest (OCI or Docker schema2; the two share their shape).
public struct Manifest: Codable, Hashable, Sendable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var artifactType: String?
    public var config: Descriptor
    public var layers: [Descriptor]
    public var subject: Descriptor?
    public var annotations: [String: String]?

    public init(schemaVersion: Int = 2, mediaType: String? = MediaType.ociManifest, config: Descriptor, layers: [Descriptor]) {
        self.schemaVersion = schemaVersion
        self.mediaType = mediaType
        self.config = config
        self.layers = layers
    }
}

/// An image index (OCI) or manifest list (Docker): one manifest per platform.
public struct Index: Codable, Hashable, Sendable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var manifests: [Descriptor]
    public var annotations: [String: String]?

    /// The entry to pull for `platform`, preferring an exact variant match; entries without a
    /// platform (attestations, artifacts) are never chosen.
    public func manifest(for platform: Platform) -> Descriptor? {
        let candidates = manifests.filter { desc in
            guard let p = desc.platform, MediaType.isManifest(desc.mediaType) || MediaType.isIndex(desc.mediaType) else { return false }
            return platform.matches(p)
        }
        let want = platform.normalized
        return candidates.first { $0.platform?.normalized.variant == want.variant } ?? candidates.first
    }

    public var platforms: [Platform] { manifests.compactMap(\.platform) }
}

/// The parts of an image config imgvol uses; the raw bytes are kept for `inspect`.
public struct ImageConfig: Codable, Hashable, Sendable {
    public struct RootFS: Codable, Hashable, Sendable {
        public var type: String
        public var diffIDs: [Digest]
        enum CodingKeys: String, CodingKey {
            case type
            case diffIDs = "diff_ids"
        }
    }

    public var created: String?
    public var architecture: String?
    public var os: String?
    public var variant: String?
    public var rootfs: RootFS?

    public init(created: String? = nil, architecture: String? = nil, os: String? = nil, rootfs: RootFS? = nil) {
        self.created = created
        self.architecture = architecture
        self.os = os
        self.rootfs = rootfs
    }
}

/// A manifest document as fetched: either one image or an index of them.
public enum ManifestDocument: Sendable {
    case image(Manifest)
    case index(Index)

    /// Decodes by media type (from the response header, else the document's own field).
    public static func decode(_ bytes: [UInt8], contentType: String?) throws(OCIError) -> ManifestDocument {
        let declared = try JSONCoding.decode(Probe.self, from: bytes, what: "manifest").mediaType
        var type = mediaType(fromContentType: contentType)
        if type.isEmpty || type == "application/json" || type == "text/plain" { type = declared ?? "" }
        if type.isEmpty { type = declared ?? MediaType.ociManifest }
        if MediaType.isSchema1(type) || (try? JSONCoding.decode(Probe.self, from: bytes, what: "manifest").schemaVersion) == 1 {
            throw OCIError(.unsupportedMediaType, type, "Docker schema1 manifests are deprecated and not supported; re-push the image with a current tool (docker, podman, skopeo)")
        }
        if MediaType.isIndex(type) {
            return .index(try JSONCoding.decode(Index.self, from: bytes, what: "image index"))
        }
        if MediaType.isManifest(type) {
            return .image(try JSONCoding.decode(Manifest.self, from: bytes, what: "image manifest"))
        }
        throw OCIError(.unsupportedMediaType, type, "expected an OCI or Docker image manifest or index")
    }

    /// The media type part of a `Content-Type` header, without parameters; "" when the header
    /// has none (absent, empty, or only parameters such as `; charset=x`), so the document's
    /// own `mediaType` decides. Any header text is accepted: a registry must not crash us.
    static func mediaType(fromContentType header: String?) -> String {
        guard let header, let head = header.split(separator: ";", omittingEmptySubsequences: false).first else { return "" }
        return String(head).trimmingSpaces
    }

    private struct Probe: Decodable {
        var mediaType: String?
        var schemaVersion: Int?
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return String(s)
    }
}
