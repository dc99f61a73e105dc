import Crypto

/// A content digest (`sha256:<64 hex>`). Only sha256 is accepted: it is what every registry
/// serves, and refusing the rest keeps every stored path a fixed, safe shape.
public struct Digest: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    public static let algorithm = "sha256"

    /// Lower-case hex, exactly 64 characters; safe to use as a file name.
    public let hex: String

    public init(_ string: String) throws(OCIError) {
        guard let colon = string.firstIndex(of: ":") else {
            throw OCIError(.invalidDigest, string, "expected \"sha256:<64 hex digits>\"")
        }
        let algorithm = string[..<colon]
        let encoded = string[string.index(after: colon)...]
        guard algorithm == Self.algorithm else {
            throw OCIError(.invalidDigest, string, "unsupported algorithm \"\(algorithm)\"; only sha256 is supported")
        }
        try self.init(hex: String(encoded))
    }

    public init(hex: String) throws(OCIError) {
        guard hex.utf8.count == 64, hex.utf8.allSatisfy({ Self.isLowerHex($0) }) else {
            throw OCIError(.invalidDigest, "sha256:\(hex)", "expected 64 lower-case hex digits")
        }
        self.hex = hex
    }

    private init(trustedHex: String) { self.hex = trustedHex }

    public var description: String { "sha256:\(hex)" }

    /// The short form users see in tables (like podman's IMAGE ID).
    public var short: String { String(hex.prefix(12)) }

    public static func < (lhs: Digest, rhs: Digest) -> Bool { lhs.hex < rhs.hex }

    public static func of<Bytes: Sequence>(_ bytes: Bytes) -> Digest where Bytes.Element == UInt8 {
        var hasher = DigestHasher()
        hasher.update(Array(bytes))
        return hasher.finalize()
    }

    static func isLowerHex(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66)
    }

    fileprivate static func fromHashBytes<D: Sequence>(_ bytes: D) -> Digest where D.Element == UInt8 {
        let table = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for b in bytes {
            out.append(table[Int(b >> 4)])
            out.append(table[Int(b & 0x0f)])
        }
        return Digest(trustedHex: String(decoding: out, as: UTF8.self))
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        do { try self.init(text) } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// Incremental sha256 for content as it streams in.
public struct DigestHasher: Sendable {
    private var hasher = SHA256()
    public private(set) var count: Int64 = 0

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        hasher.update(bufferPointer: bytes)
        count += Int64(bytes.count)
    }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    public func finalize() -> Digest {
        Digest.fromHashBytes(hasher.finalize())
    }
}
