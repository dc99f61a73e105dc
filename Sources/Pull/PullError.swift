import OCI

/// A pull that cannot complete for a reason other than the registry's answer.
public struct PullError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        case noMatchingPlatform
        case diffIDMismatch
        case invalidImage
        case notCached
        case noSpace
        /// A step imgvol relies on did not happen (a bug to report).
        case internalError
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}

/// What a pull reports as it goes; the CLI draws it on a TTY.
public protocol PullProgress: Sendable {
    func layerStarted(_ digest: Digest, size: Int64)
    func layerProgress(_ digest: Digest, bytes: Int64)
    func layerFinished(_ digest: Digest, cached: Bool)
}
