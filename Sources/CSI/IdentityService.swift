import CSIProto
import GRPCCore
import SwiftProtobuf
import Synchronization

/// CSI Identity: who the plugin is and whether it is ready. The node-driver-registrar and
/// the liveness probe call it; it advertises no controller service (the plugin only mounts on
/// the node; volumes are inline or pre-provisioned PVs).
struct IdentityService: Csi_V1_Identity.SimpleServiceProtocol {
    let driverName: String
    let version: String
    let ready: ReadyFlag
    let log: RPCLog

    func getPluginInfo(request: Csi_V1_GetPluginInfoRequest, context: ServerContext) async throws -> Csi_V1_GetPluginInfoResponse {
        try await log.run("GetPluginInfo") {
            var response = Csi_V1_GetPluginInfoResponse()
            response.name = driverName
            response.vendorVersion = version
            return response
        }
    }

    func getPluginCapabilities(request: Csi_V1_GetPluginCapabilitiesRequest, context: ServerContext) async throws -> Csi_V1_GetPluginCapabilitiesResponse {
        try await log.run("GetPluginCapabilities") { Csi_V1_GetPluginCapabilitiesResponse() }
    }

    func probe(request: Csi_V1_ProbeRequest, context: ServerContext) async throws -> Csi_V1_ProbeResponse {
        try await log.run("Probe") {
            var response = Csi_V1_ProbeResponse()
            response.ready = Google_Protobuf_BoolValue(ready.isReady)
            return response
        }
    }
}

/// Set once the plugin has restored its volumes' locks and serves; Probe reports it.
final class ReadyFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .releasing) }
    var isReady: Bool { value.load(ordering: .acquiring) }
}
