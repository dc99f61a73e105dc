import AsyncHTTPClient
import NIOCore

/// How much of one kind of registry answer imgvol holds in memory at most. A registry is not
/// trusted to be small: without a bound, one endless manifest or header exhausts a device's
/// memory (and every front end that shares the process).
public struct SizeLimit: Sendable, Equatable, CustomStringConvertible {
    /// What is bounded, for messages ("manifest or index").
    public let what: String
    public let bytes: Int
    /// Why a real registry never comes near it, and what to do when one does.
    public let advice: String

    /// The distribution spec's guidance: registries may refuse manifests over 4 MiB.
    public static let manifest = SizeLimit(what: "manifest or index", bytes: 4 << 20,
        advice: "the distribution spec lets registries refuse bigger ones; check the reference, or re-push the image with fewer entries")
    /// Configs carry history and labels, not data; 16 MiB is hundreds of times a large one.
    public static let config = SizeLimit(what: "image config", bytes: 16 << 20,
        advice: "a config holds metadata, not files; the registry is misbehaving or the image is not a container image")
    /// A token response is a JSON object with a few short strings.
    public static let tokenResponse = SizeLimit(what: "token response", bytes: 1 << 20,
        advice: "the token service is misbehaving; check the realm the registry points at")
    /// A challenge names a realm, a service and a scope.
    public static let authChallenge = SizeLimit(what: "WWW-Authenticate header", bytes: 8 << 10,
        advice: "the registry is misbehaving; check the address")

    public var description: String { "\(what) limit of \(Self.format(bytes))" }

    static func format(_ bytes: Int) -> String {
        if bytes >= 1 << 20, bytes % (1 << 20) == 0 { return "\(bytes >> 20) MiB" }
        if bytes >= 1 << 10, bytes % (1 << 10) == 0 { return "\(bytes >> 10) KiB" }
        return "\(bytes) bytes"
    }

    /// The error for `subject` (e.g. "manifest of REF") from `registry` being over the limit;
    /// `size` when it is known (declared), nil when the body simply did not stop.
    func exceeded(_ subject: String, registry: String, size: Int64?) -> RegistryError {
        let got = size.map { "is \($0) bytes" } ?? "is larger"
        return RegistryError(.tooLarge, "\(subject) from \(registry) \(got), over the \(Self.format(bytes)) allowed for a \(what); \(advice)", limit: self)
    }

    /// A declared `Content-Length` over the limit fails before any byte is read.
    func check(contentLength: String?, _ subject: String, registry: String) throws(RegistryError) {
        guard let contentLength, let declared = Int64(contentLength), declared > bytes else { return }
        throw exceeded(subject, registry: registry, size: declared)
    }
}

/// Bytes gathered up to a bound: the reader stops at the first byte past it.
struct BoundedBytes {
    let bound: Int
    private(set) var bytes: [UInt8] = []
    /// More arrived than `bound` (what is kept is cut at the bound).
    private(set) var overflowed = false

    init(bound: Int) { self.bound = bound }

    /// false once the bound is passed: the caller stops reading.
    mutating func append(_ raw: UnsafeRawBufferPointer) -> Bool {
        let room = bound - bytes.count
        if raw.count > room {
            bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[0..<max(0, room)]))
            overflowed = true
            return false
        }
        bytes.append(contentsOf: raw)
        return true
    }
}

extension RegistryClient {
    /// The whole body of `response`, failing with `limit`'s error, not retried, when the
    /// registry declares or sends more.
    static func collect(_ response: HTTPClientResponse, limit: SizeLimit, _ subject: String, registry: String) async throws -> [UInt8] {
        try limit.check(contentLength: response.headers.first(name: "Content-Length"), subject, registry: registry)
        let collected = try await collect(response, bound: limit.bytes)
        if collected.overflowed { throw limit.exceeded(subject, registry: registry, size: nil) }
        return collected.bytes
    }

    /// At most `bound` bytes of the body and whether there were more; the rest is not read.
    static func collect(_ response: HTTPClientResponse, bound: Int) async throws -> BoundedBytes {
        var collected = BoundedBytes(bound: bound)
        for try await buffer in response.body {
            let more = buffer.withUnsafeReadableBytes { collected.append($0) }
            if !more { break }
        }
        return collected
    }
}
