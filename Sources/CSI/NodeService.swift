import CSIProto
import GRPCCore
import Mounts

/// CSI Node: publish (pull + mount read-only), unpublish, stats. Staging and expansion do
/// not apply to read-only image volumes and answer UNIMPLEMENTED. Every method goes through
/// `RPCLog.run`, which logs it, counts it and maps its error to a status code.
struct NodeService: Csi_V1_Node.SimpleServiceProtocol {
    let nodeID: String
    let volumes: VolumeManager
    let log: RPCLog

    func nodePublishVolume(request: Csi_V1_NodePublishVolumeRequest, context: ServerContext) async throws -> Csi_V1_NodePublishVolumeResponse {
        let fields = RPCLog.Fields(volumeID: request.volumeID, target: request.targetPath, image: request.volumeContext["image"] ?? "")
        return try await log.run("NodePublishVolume", fields) {
            let publish = try PublishRequest(request)
            if !publish.unknownAttributes.isEmpty {
                log.logger.warning("volume \(publish.volumeID): ignoring unknown volume attributes \(publish.unknownAttributes.joined(separator: ", ")); known: \(PublishRequest.knownAttributes.sorted().joined(separator: ", "))")
            }
            try await volumes.publish(publish)
            return Csi_V1_NodePublishVolumeResponse()
        }
    }

    func nodeUnpublishVolume(request: Csi_V1_NodeUnpublishVolumeRequest, context: ServerContext) async throws -> Csi_V1_NodeUnpublishVolumeResponse {
        let fields = RPCLog.Fields(volumeID: request.volumeID, target: request.targetPath)
        return try await log.run("NodeUnpublishVolume", fields) {
            let id = try PublishRequest.volumeID(request.volumeID)
            let target = try PublishRequest.targetPath(request.targetPath)
            try await volumes.unpublish(volumeID: id, targetPath: target)
            return Csi_V1_NodeUnpublishVolumeResponse()
        }
    }

    func nodeGetVolumeStats(request: Csi_V1_NodeGetVolumeStatsRequest, context: ServerContext) async throws -> Csi_V1_NodeGetVolumeStatsResponse {
        let fields = RPCLog.Fields(volumeID: request.volumeID, target: request.volumePath)
        return try await log.run("NodeGetVolumeStats", fields) {
            let id = try PublishRequest.volumeID(request.volumeID)
            guard !request.volumePath.isEmpty else { throw CSIError.invalidArgument("volume_path is required") }
            let usage = try await volumes.usage(volumeID: id, path: MountTable.absolute(request.volumePath))
            var bytes = Csi_V1_VolumeUsage()
            bytes.unit = .bytes
            bytes.total = usage.bytes
            bytes.used = usage.bytes
            var inodes = Csi_V1_VolumeUsage()
            inodes.unit = .inodes
            inodes.total = usage.inodes
            inodes.used = usage.inodes
            var response = Csi_V1_NodeGetVolumeStatsResponse()
            response.usage = [bytes, inodes]
            return response
        }
    }

    func nodeGetCapabilities(request: Csi_V1_NodeGetCapabilitiesRequest, context: ServerContext) async throws -> Csi_V1_NodeGetCapabilitiesResponse {
        try await log.run("NodeGetCapabilities") {
            var rpc = Csi_V1_NodeServiceCapability.RPC()
            rpc.type = .getVolumeStats
            var capability = Csi_V1_NodeServiceCapability()
            capability.rpc = rpc
            var response = Csi_V1_NodeGetCapabilitiesResponse()
            response.capabilities = [capability]
            return response
        }
    }

    func nodeGetInfo(request: Csi_V1_NodeGetInfoRequest, context: ServerContext) async throws -> Csi_V1_NodeGetInfoResponse {
        try await log.run("NodeGetInfo") {
            var response = Csi_V1_NodeGetInfoResponse()
            response.nodeID = nodeID
            return response
        }
    }

    func nodeStageVolume(request: Csi_V1_NodeStageVolumeRequest, context: ServerContext) async throws -> Csi_V1_NodeStageVolumeResponse {
        try await log.run("NodeStageVolume", RPCLog.Fields(volumeID: request.volumeID)) {
            throw CSIError(.unimplemented, "NodeStageVolume is not supported: imgvol does not advertise STAGE_UNSTAGE_VOLUME")
        }
    }

    func nodeUnstageVolume(request: Csi_V1_NodeUnstageVolumeRequest, context: ServerContext) async throws -> Csi_V1_NodeUnstageVolumeResponse {
        try await log.run("NodeUnstageVolume", RPCLog.Fields(volumeID: request.volumeID)) {
            throw CSIError(.unimplemented, "NodeUnstageVolume is not supported: imgvol does not advertise STAGE_UNSTAGE_VOLUME")
        }
    }

    func nodeExpandVolume(request: Csi_V1_NodeExpandVolumeRequest, context: ServerContext) async throws -> Csi_V1_NodeExpandVolumeResponse {
        try await log.run("NodeExpandVolume", RPCLog.Fields(volumeID: request.volumeID)) {
            throw CSIError(.unimplemented, "NodeExpandVolume is not supported: image volumes are read-only and cannot grow")
        }
    }
}
