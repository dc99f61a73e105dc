import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import OCI

/// A manifest or index as the registry served it, checked against its digest.
public struct FetchedManifest: Sendable {
    public let bytes: [UInt8]
    public let mediaType: String
    public let digest: Digest
    public let document: ManifestDocument
    /// Where it came from; blobs are fetched from there first.
    public let endpoint: Endpoint
}

extension RegistryClient {
    /// Fetches `reference` (by digest when pinned, else by tag), trying mirrors first.
    public func fetchManifest(_ reference: Reference, digest pinned: Digest? = nil) async throws -> FetchedManifest {
        let wanted = pinned ?? reference.digest
        let tagOrDigest = wanted?.description ?? reference.manifestReference
        var lastError: (any Error)?
        for endpoint in try endpoints(for: wanted.map { reference.withDigest($0) } ?? reference) {
            do {
                return try await withRetries("fetching manifest \(reference)", on: endpoint) {
                    try await fetchManifest(tagOrDigest, expected: wanted, endpoint: endpoint, reference: reference)
                }
            } catch let error as RegistryError where endpoint.isMirror {
                logger.info("mirror \(endpoint.registry) could not serve \(reference): \(error.message); trying the next source")
                lastError = error
            }
        }
        throw lastError ?? RegistryError(.notFound, "no registry to pull \(reference) from")
    }

    private func fetchManifest(_ tagOrDigest: String, expected: Digest?, endpoint: Endpoint, reference: Reference) async throws -> FetchedManifest {
        var headers = HTTPHeaders()
        headers.add(name: "Accept", value: MediaType.manifestAccept.joined(separator: ", "))
        let response = try await send(.GET, "/v2/\(endpoint.repository)/manifests/\(tagOrDigest)", on: endpoint, headers: headers)
        guard response.status == .ok else {
            let error = await failure(response, "manifest \(reference)", endpoint: endpoint)
            if error.kind == .notFound {
                throw RegistryError(.notFound, "image \(reference) not found: \(endpoint.registry) has no manifest \"\(tagOrDigest)\" in \(endpoint.repository); check the name and tag")
            }
            throw error
        }
        let bytes = try await Self.collect(response, limit: .manifest, "manifest \(tagOrDigest) of \(reference)", registry: endpoint.registry)
        let actual = Digest.of(bytes)
        if let expected, actual != expected {
            throw RegistryError(.digestMismatch, "manifest of \(reference) from \(endpoint.registry) does not match its digest: expected \(expected), got \(actual)")
        }
        let contentType = response.headers.first(name: "Content-Type")
        let document: ManifestDocument
        do { document = try ManifestDocument.decode(bytes, contentType: contentType) } catch {
            throw RegistryError(.unsupported, "\(reference): \(error.description)")
        }
        let mediaType: String
        switch document {
        case .image(let m): mediaType = m.mediaType ?? MediaType.ociManifest
        case .index(let i): mediaType = i.mediaType ?? MediaType.ociIndex
        }
        return FetchedManifest(bytes: bytes, mediaType: mediaType, digest: actual, document: document, endpoint: endpoint)
    }
}
