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
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
