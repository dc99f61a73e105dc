/// The media types imgvol understands, and what each means for how a blob is read.
public enum MediaType {
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let ociLayer = "application/vnd.oci.image.layer.v1.tar"
    public static let ociLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    public static let ociLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
    public static let ociLayerNondistributable = "application/vnd.oci.image.layer.nondistributable.v1.tar"
    public static let ociLayerNondistributableGzip = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    public static let ociLayerNondistributableZstd = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
    public static let ociEmpty = "application/vnd.oci.empty.v1+json"

    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    public static let dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    public static let dockerLayerForeignGzip = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    public static let dockerSchema1 = "application/vnd.docker.distribution.manifest.v1+json"
    public static let dockerSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"

    /// Sent as `Accept` on manifest requests: every form imgvol can read, most preferred first.
    public static let manifestAccept = [ociIndex, ociManifest, dockerManifestList, dockerManifest]

    public static func isIndex(_ type: String) -> Bool { type == ociIndex || type == dockerManifestList }
    public static func isManifest(_ type: String) -> Bool { type == ociManifest || type == dockerManifest }
    public static func isSchema1(_ type: String) -> Bool { type == dockerSchema1 || type == dockerSchema1Signed }

    /// The type without parameters (`application/vnd.ollama.image.template; name=x`).
    public static func base(_ type: String) -> String {
        String(type.split(separator: ";", maxSplits: 1).first ?? "").trimmingSpaces
    }
}

/// How a layer's bytes are compressed, decided by its media type.
public enum LayerCompression: String, Sendable, Codable {
    case none, gzip, zstd

    /// nil when the media type is not a tar layer imgvol can unpack.
    public init?(layerMediaType type: String) {
        switch type {
        case MediaType.ociLayer, MediaType.ociLayerNondistributable, "application/vnd.docker.image.rootfs.diff.tar":
            self = .none
        case MediaType.ociLayerGzip, MediaType.ociLayerNondistributableGzip, MediaType.dockerLayerGzip, MediaType.dockerLayerForeignGzip:
            self = .gzip
        case MediaType.ociLayerZstd, MediaType.ociLayerNondistributableZstd, "application/vnd.docker.image.rootfs.diff.tar.zstd":
            self = .zstd
        default:
            return nil
        }
    }
}
