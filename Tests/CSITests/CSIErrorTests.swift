@testable import CSI
import GRPCCore
import Mounts
import Pull
import OCI
import Registry
import Testing

@Suite("CSIError: one mapping to status codes")
struct CSIErrorTests {
    @Test("registry errors", arguments: [
        (RegistryError.Kind.unauthorized, RPCError.Code.unauthenticated), (.denied, .permissionDenied), (.notFound, .notFound),
        (.network, .unavailable), (.badResponse, .unavailable), (.digestMismatch, .dataLoss), (.invalidConfiguration, .failedPrecondition),
        (.blocked, .failedPrecondition),
    ])
    func registry(_ kind: RegistryError.Kind, _ code: RPCError.Code) {
        let error = CSIError(RegistryError(kind, "message for people"))
        #expect(error.code == code)
        #expect(error.message.hasPrefix("message for people"))
        #expect(error.message.contains("nodePublishSecretRef") == (kind == .unauthorized || kind == .denied))
    }

    @Test func pullNeverAndNotCachedIsFailedPrecondition() {
        #expect(CSIError(PullError(.notCached, "not cached")).code == .failedPrecondition)
    }

    @Test func invalidReferenceIsInvalidArgument() {
        #expect(CSIError(OCIError(.invalidReference, "x", "bad")).code == .invalidArgument)
    }

    @Test func cancellationIsDeadlineExceeded() {
        #expect(CSIError(CancellationError()).code == .deadlineExceeded)
    }

    @Test func csiErrorsPassThrough() {
        #expect(CSIError(CSIError.alreadyExists("x")) == CSIError.alreadyExists("x"))
        #expect(CSIError.alreadyExists("x").rpcError.code == .alreadyExists)
    }

    @Test func codeNamesMatchTheSpec() {
        #expect(RPCError.Code.invalidArgument.csiName == "INVALID_ARGUMENT")
        #expect(RPCError.Code.internalError.csiName == "INTERNAL")
    }
}

@Suite("CSIEndpoint")
struct CSIEndpointTests {
    @Test func unixForms() throws {
        #expect(try CSIEndpoint("unix:///csi/csi.sock").socketPath == "/csi/csi.sock")
        #expect(try CSIEndpoint("unix:/csi/csi.sock").socketPath == "/csi/csi.sock")
        #expect(try CSIEndpoint("/csi/csi.sock").socketPath == "/csi/csi.sock")
    }

    @Test func tcpIsRefused() {
        #expect(throws: CSIError.self) { try CSIEndpoint("tcp://127.0.0.1:10000") }
        #expect(throws: CSIError.self) { try CSIEndpoint("unix://") }
    }
}
