import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import OCI

/// Where a downloaded blob goes. It keeps the bytes and their running hash, so a download can
/// resume from `count` after a dropped connection or a killed process.
public protocol BlobSink: AnyObject, Sendable {
    var count: Int64 { get }
    func append(_ bytes: UnsafeRawBufferPointer) throws
    /// The server ignored `Range`: discard what is held and start over.
    func restart() throws
    func digest() -> Digest
}

extension RegistryClient {
    /// Fetches a small blob (a config) into memory, checked against its descriptor.
    public func fetchBlob(_ descriptor: Descriptor, from endpoints: [Endpoint], reference: Reference, limit: SizeLimit = .config) async throws -> [UInt8] {
        guard descriptor.size <= limit.bytes else {
            throw limit.exceeded("blob \(descriptor.digest) of \(reference) (its descriptor)", registry: endpoints.last?.registry ?? reference.registry, size: descriptor.size)
        }
        return try await eachEndpoint(endpoints, reference: reference) { endpoint in
            try await withRetries("fetching blob \(descriptor.digest)", on: endpoint) {
                let response = try await openBlob(descriptor.digest, endpoint: endpoint, offset: 0)
                guard response.status == .ok else { throw await failure(response, "blob \(descriptor.digest) of \(reference)", endpoint: endpoint) }
                // One byte past the descriptor's size is enough to know it lies: verify says so.
                let bytes = try await Self.collect(response, bound: Int(descriptor.size) + 1).bytes
                try Self.verify(count: Int64(bytes.count), digest: Digest.of(bytes), against: descriptor, reference: reference)
                return bytes
            }
        }
    }

    /// Streams a blob into `sink`, resuming with `Range` from what the sink already holds after
    /// a dropped connection, and checks size and digest at the end.
    public func download(_ descriptor: Descriptor, from endpoints: [Endpoint], reference: Reference, into sink: any BlobSink) async throws {
        try await eachEndpoint(endpoints, reference: reference) { endpoint in
            try await withRetries("downloading \(descriptor.digest)", on: endpoint) {
                try await downloadOnce(descriptor, endpoint: endpoint, reference: reference, sink: sink)
            }
        }
        try Self.verify(count: sink.count, digest: sink.digest(), against: descriptor, reference: reference)
    }

    private func downloadOnce(_ descriptor: Descriptor, endpoint: Endpoint, reference: Reference, sink: any BlobSink) async throws {
        if sink.count > descriptor.size { try sink.restart() }
        if sink.count == descriptor.size { return }
        let offset = sink.count
        let response = try await openBlob(descriptor.digest, endpoint: endpoint, offset: offset)
        switch response.status {
        case .partialContent:
            break
        case .ok:
            if offset > 0 { try sink.restart() }
        case .rangeNotSatisfiable:
            try sink.restart()
            throw RegistryError(.network, "registry refused to resume \(descriptor.digest) at byte \(offset)")
        default:
            throw await failure(response, "blob \(descriptor.digest) of \(reference)", endpoint: endpoint)
        }
        for try await buffer in response.body {
            try buffer.withUnsafeReadableBytes { raw in
                guard sink.count + Int64(raw.count) <= descriptor.size else {
                    throw RegistryError(.sizeMismatch, "blob \(descriptor.digest) of \(reference) is longer than the \(descriptor.size) bytes its descriptor says")
                }
                try sink.append(raw)
            }
        }
        if sink.count < descriptor.size {
            throw RegistryError(.network, "connection for \(descriptor.digest) ended at byte \(sink.count) of \(descriptor.size)")
        }
    }

    /// GET on the blob, following redirects (to a CDN or object store) without our credentials.
    /// `end` (exclusive) asks for a closed range.
    func openBlob(_ digest: Digest, endpoint: Endpoint, offset: Int64, end: Int64? = nil) async throws -> HTTPClientResponse {
        var headers = HTTPHeaders()
        if let end {
            headers.add(name: "Range", value: "bytes=\(offset)-\(end - 1)")
        } else if offset > 0 {
            headers.add(name: "Range", value: "bytes=\(offset)-")
        }
        var response = try await send(.GET, "/v2/\(endpoint.repository)/blobs/\(digest)", on: endpoint, headers: headers)
        var hops = 0
        while [301, 302, 303, 307, 308].contains(response.status.code), let location = response.headers.first(name: "Location") {
            hops += 1
            guard hops <= 8 else { throw RegistryError(.badResponse, "too many redirects for blob \(digest)") }
            _ = try? await response.body.collect(upTo: 1 << 16)
            let base = try await baseURL(for: endpoint)
            let url = location.hasPrefix("/") ? base + location : location
            if url.hasPrefix("http://") && !endpoint.insecure {
                throw RegistryError(.badResponse, "blob \(digest) redirects to plain HTTP (\(url)); refusing unless --tls-verify=false")
            }
            var request = HTTPClientRequest(url: url)
            request.headers = headers
            request.headers.add(name: "User-Agent", value: options.userAgent)
            // The deadline covers the response head only; the body is bounded by the read timeout.
            response = try await client(for: endpoint).execute(request, timeout: headDeadline)
        }
        return response
    }

    /// Reads `range` of a blob with HTTP `Range` requests, handing each piece to `body` with
    /// its offset in the blob; a dropped connection resumes where it broke. The bytes are not
    /// verified here: whoever assembles the blob checks its digest once it is whole.
    public func readRange(_ descriptor: Descriptor, _ range: Range<Int64>, from endpoints: [Endpoint], reference: Reference,
                          _ body: (UnsafeRawBufferPointer, Int64) throws -> Void) async throws {
        guard !range.isEmpty else { return }
        var position = range.lowerBound
        try await eachEndpoint(endpoints, reference: reference) { endpoint in
            try await withRetries("reading bytes \(range.lowerBound)-\(range.upperBound) of \(descriptor.digest)", on: endpoint) {
                guard position < range.upperBound else { return }
                let response = try await openBlob(descriptor.digest, endpoint: endpoint, offset: position, end: range.upperBound)
                switch response.status {
                case .partialContent:
                    break
                case .ok where position == 0 && range.upperBound == descriptor.size:
                    break
                case .ok:
                    throw RegistryError(.rangeUnsupported, "registry \(endpoint.registry) ignores HTTP Range requests for \(descriptor.digest); lazy mounts need them (mount without --lazy)")
                default:
                    throw await failure(response, "blob \(descriptor.digest) of \(reference)", endpoint: endpoint)
                }
                for try await buffer in response.body {
                    try buffer.withUnsafeReadableBytes { raw in
                        let usable = Int(min(Int64(raw.count), range.upperBound - position))
                        guard usable > 0 else { return }
                        try body(UnsafeRawBufferPointer(rebasing: raw[0..<usable]), position)
                        position += Int64(usable)
                    }
                }
                if position < range.upperBound {
                    throw RegistryError(.network, "connection for bytes of \(descriptor.digest) ended at byte \(position) of \(range.upperBound)")
                }
            }
        }
    }

    static func verify(count: Int64, digest: Digest, against descriptor: Descriptor, reference: Reference) throws(RegistryError) {
        guard count == descriptor.size else {
            throw RegistryError(.sizeMismatch, "blob \(descriptor.digest) of \(reference) has \(count) bytes, but its descriptor says \(descriptor.size)")
        }
        guard digest == descriptor.digest else {
            throw RegistryError(.digestMismatch, "blob of \(reference) failed verification: expected digest \(descriptor.digest), got \(digest); the registry's copy is corrupt, nothing was stored")
        }
    }

    /// Tries the mirrors then the origin; a mirror's failure only moves on to the next source.
    func eachEndpoint<T: Sendable>(_ endpoints: [Endpoint], reference: Reference, _ body: (Endpoint) async throws -> T) async throws -> T {
        var lastError: (any Error)?
        for endpoint in endpoints {
            do {
                return try await body(endpoint)
            } catch let error as RegistryError where endpoint.isMirror && error.kind != .digestMismatch {
                logger.info("mirror \(endpoint.registry): \(error.message); trying the next source")
                lastError = error
            }
        }
        throw lastError ?? RegistryError(.notFound, "no registry to pull \(reference) from")
    }
}
