import FileIO
import OCI
#if canImport(Glibc)
import Glibc
#endif

/// A store operation that failed, with the object and path involved.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        case io
        case digestMismatch
        case notFound
        case corrupt
        /// The store's file system is full (ENOSPC, EDQUOT).
        case noSpace
    }

    public let kind: Kind
    public let detail: String

    public init(_ kind: Kind, _ detail: String) {
        self.kind = kind
        self.detail = detail
    }

    public static func io(_ error: SystemError) -> StoreError {
        StoreError([ENOSPC, EDQUOT].contains(error.errno) ? .noSpace : .io, error.description)
    }

    public var description: String { detail }
}
