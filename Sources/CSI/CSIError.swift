import FileIO
import GRPCCore
import Mounts
import Pull
import OCI
import Registry
import Store

/// A CSI call's failure: the gRPC status code kubelet acts on, and a message a person can act
/// on. Every error thrown by a handler passes through `CSIError(_:)`, so the mapping from the
/// project's typed errors to status codes lives in this one place.
public struct CSIError: Error, CustomStringConvertible, Sendable, Equatable {
    public let code: RPCError.Code
    public let message: String

    public init(_ code: RPCError.Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    public var rpcError: RPCError { RPCError(code: code, message: message) }

    public static func invalidArgument(_ message: String) -> CSIError { CSIError(.invalidArgument, message) }
    public static func notFound(_ message: String) -> CSIError { CSIError(.notFound, message) }
    public static func alreadyExists(_ message: String) -> CSIError { CSIError(.alreadyExists, message) }
    public static func failedPrecondition(_ message: String) -> CSIError { CSIError(.failedPrecondition, message) }
    public static func internalError(_ message: String) -> CSIError { CSIError(.internalError, message) }

    /// Maps any error to a status. Kubelet retries every failed publish, so the code mainly
    /// tells the operator (events, metrics) whose problem it is: the pod spec
    /// (INVALID_ARGUMENT, NOT_FOUND), the credentials (UNAUTHENTICATED, PERMISSION_DENIED),
    /// the node's state (FAILED_PRECONDITION) or the network (UNAVAILABLE).
    public init(_ error: any Error) {
        switch error {
        case let error as CSIError:
            self = error
        case let error as RPCError:
            self.init(error.code, error.message)
        case let error as RegistryError where error.kind == .unauthorized || error.kind == .denied:
            // The registry's message speaks to the CLI (--creds); say what a pod spec needs.
            self.init(Self.code(for: error.kind), error.message + " (for a CSI volume: give it a secret, nodePublishSecretRef, with .dockerconfigjson or username and password)")
        case let error as RegistryError:
            self.init(Self.code(for: error.kind), error.message)
        case let error as PullError:
            switch error.kind {
            case .notCached: self.init(.failedPrecondition, error.message)
            case .noMatchingPlatform: self.init(.failedPrecondition, error.message)
            case .invalidImage, .diffIDMismatch: self.init(.failedPrecondition, error.message)
            case .noSpace: self.init(.resourceExhausted, error.message)
            case .internalError: self.init(.internalError, error.message)
            }
        case let error as OCIError:
            switch error.kind {
            case .invalidReference, .invalidPlatform: self.init(.invalidArgument, error.description)
            case .invalidDigest, .invalidDocument, .unsupportedMediaType: self.init(.failedPrecondition, error.description)
            }
        case let error as StoreError:
            self.init(.internalError, "image store: \(error.description)")
        case let error as SystemError:
            self.init(.internalError, error.description)
        case let error as MountServer.Failure:
            self.init(.internalError, error.message)
        case is CancellationError:
            self.init(.deadlineExceeded, "the call was cancelled (deadline passed); a pull keeps running in the background and a retry joins it")
        default:
            self.init(.internalError, "\(error)")
        }
    }

    static func code(for kind: RegistryError.Kind) -> RPCError.Code {
        switch kind {
        case .unauthorized: .unauthenticated
        case .denied: .permissionDenied
        case .notFound: .notFound
        case .blocked: .failedPrecondition
        case .network, .badResponse: .unavailable
        case .digestMismatch, .sizeMismatch: .dataLoss
        case .unsupported, .rangeUnsupported: .failedPrecondition
        case .invalidConfiguration: .failedPrecondition
        case .tooLarge: .failedPrecondition
        // kubelet retries UNAVAILABLE with backoff: a stalled registry may come back.
        case .timedOut: .unavailable
        }
    }
}

extension RPCError.Code {
    /// The upper-case name used in logs and metric labels (`INVALID_ARGUMENT`), as in the CSI spec.
    var csiName: String {
        switch self {
        case .cancelled: "CANCELLED"
        case .unknown: "UNKNOWN"
        case .invalidArgument: "INVALID_ARGUMENT"
        case .deadlineExceeded: "DEADLINE_EXCEEDED"
        case .notFound: "NOT_FOUND"
        case .alreadyExists: "ALREADY_EXISTS"
        case .permissionDenied: "PERMISSION_DENIED"
        case .resourceExhausted: "RESOURCE_EXHAUSTED"
        case .failedPrecondition: "FAILED_PRECONDITION"
        case .aborted: "ABORTED"
        case .outOfRange: "OUT_OF_RANGE"
        case .unimplemented: "UNIMPLEMENTED"
        case .internalError: "INTERNAL"
        case .unavailable: "UNAVAILABLE"
        case .dataLoss: "DATA_LOSS"
        case .unauthenticated: "UNAUTHENTICATED"
        default: "\(self)"
        }
    }
}
