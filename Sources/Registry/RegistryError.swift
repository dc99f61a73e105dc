import OCI

/// A registry operation that failed: what was asked, of which registry, and what to do.
public struct RegistryError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        case unauthorized
        case denied
        case notFound
        case blocked
        case network
        case badResponse
        case digestMismatch
        case sizeMismatch
        case unsupported
        case rangeUnsupported
        case invalidConfiguration
        /// An answer over a `SizeLimit`: not retried, a registry that sends it once sends it again.
        case tooLarge
        /// A request or stream got no byte for the idle timeout, on every attempt.
        case timedOut
    }

    public let kind: Kind
    public let message: String
    /// The bound that was exceeded (`.tooLarge`).
    public let limit: SizeLimit?

    public init(_ kind: Kind, _ message: String, limit: SizeLimit? = nil) {
        self.kind = kind
        self.message = message
        self.limit = limit
    }

    public var description: String { message }
}
