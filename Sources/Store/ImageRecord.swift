import OCI

/// What the store knows about one pulled image (one platform's manifest). Written last in a
/// pull, so its presence means every blob and layer it names is complete.
public struct ImageRecord: Codable, Sendable, Equatable {
    public struct Layer: Codable, Sendable, Equatable {
        /// The blob as the registry serves it (maybe compressed).
        public var digest: Digest
        public var mediaType: String
        public var size: Int64
        /// sha256 of the uncompressed tar; names the stored layer. For a raw file, the blob's
        /// own digest.
        public var diffID: Digest
        /// Set for an artifact layer that is one raw file (served from the blob itself);
        /// nil for a tar layer.
        public var file: ArtifactFile?

        public init(digest: Digest, mediaType: String, size: Int64, diffID: Digest, file: ArtifactFile? = nil) {
            self.digest = digest
            self.mediaType = mediaType
            self.size = size
            self.diffID = diffID
            self.file = file
        }
    }

    /// The platform manifest's digest: the image's identity in imgvol.
    public var digest: Digest
    public var manifestMediaType: String
    /// The index the manifest was chosen from, if any (kept for inspect and GC).
    public var indexDigest: Digest?
    public var configDigest: Digest
    public var layers: [Layer]
    public var platform: String?
    public var created: String?
    public var pulledAt: String
    /// sha256 of the record's compact encoding without this field: set when the store writes
    /// the record and checked (then cleared) when it reads it, so a flipped digit in a size
    /// or a name is found. nil in records older imgvols wrote.
    public var recordChecksum: Digest?

    public init(digest: Digest, manifestMediaType: String, indexDigest: Digest?, configDigest: Digest,
                layers: [Layer], platform: String?, created: String?, pulledAt: String) {
        self.digest = digest
        self.manifestMediaType = manifestMediaType
        self.indexDigest = indexDigest
        self.configDigest = configDigest
        self.layers = layers
        self.platform = platform
        self.created = created
        self.pulledAt = pulledAt
    }

    /// The checksum this record's content has.
    var computedChecksum: Digest {
        var plain = self
        plain.recordChecksum = nil
        return Digest.of(JSONCoding.encode(plain))
    }

    /// Blobs this image keeps (manifest, index, config, raw file layers).
    public var blobs: [Digest] {
        [digest, configDigest] + (indexDigest.map { [$0] } ?? []) + layers.filter { $0.file != nil }.map(\.digest)
    }

    /// Tar layers, which live under `layers/` by diff_id.
    public var tarLayers: [Layer] { layers.filter { $0.file == nil } }
}
