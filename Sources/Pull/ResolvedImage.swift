import OCI
import Registry

/// A reference resolved to one image manifest for a platform, with the index it was chosen
/// from: what a pull and a lazy mount both start from.
public struct ResolvedImage: Sendable {
    public var fetched: FetchedManifest
    public var manifest: Manifest
    public var indexDigest: Digest?
    public var indexBytes: [UInt8]?

    /// Fetches the manifest, going through an index to `platform`'s entry.
    static func resolve(_ reference: Reference, platform: Platform, client: RegistryClient) async throws -> ResolvedImage {
        var fetched = try await client.fetchManifest(reference)
        var indexDigest: Digest?
        var indexBytes: [UInt8]?
        if case .index(let index) = fetched.document {
            guard let chosen = index.manifest(for: platform) else {
                let offered = index.platforms.map(\.description).joined(separator: ", ")
                throw PullError(.noMatchingPlatform, "image \(reference) has no manifest for \(platform) (it offers: \(offered.isEmpty ? "none" : offered)); choose one with --platform")
            }
            indexDigest = fetched.digest
            indexBytes = fetched.bytes
            fetched = try await client.fetchManifest(reference, digest: chosen.digest)
        }
        guard case .image(let manifest) = fetched.document else {
            throw PullError(.invalidImage, "\(reference): an index points at another index; nested indexes are not supported")
        }
        return ResolvedImage(fetched: fetched, manifest: manifest, indexDigest: indexDigest, indexBytes: indexBytes)
    }

    /// Where blobs come from: the source that served the manifest first, then the others
    /// (mirrors, origin) in order.
    func endpoints(_ reference: Reference, client: RegistryClient) throws -> [Endpoint] {
        let first = fetched.endpoint
        return [first] + (try client.endpoints(for: reference)).filter { $0 != first }
    }
}
