/// Why a value from a user or a registry is not valid OCI: carries the offending text so the
/// message can say exactly what to fix.
public struct OCIError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case invalidReference
        case invalidDigest
        case invalidPlatform
        case invalidDocument
        case unsupportedMediaType
    }

    public let kind: Kind
    public let input: String
    public let reason: String

    public init(_ kind: Kind, _ input: String, _ reason: String) {
        self.kind = kind
        self.input = input
        self.reason = reason
    }

    public var description: String {
        switch kind {
        case .invalidReference: "invalid image reference \"\(input)\": \(reason)"
        case .invalidDigest: "invalid digest \"\(input)\": \(reason)"
        case .invalidPlatform: "invalid platform \"\(input)\": \(reason)"
        case .invalidDocument: "invalid \(input): \(reason)"
        case .unsupportedMediaType: "unsupported media type \"\(input)\": \(reason)"
        }
    }
}
