@testable import CSI
import CSIProto
import Foundation
import GRPCCore
import Store
import Testing

@Suite("Node service over a unix socket")
struct NodeServiceTests {
    @Test func nodeInfoAndCapabilities() async throws {
        try await PluginHarness.run { (h: PluginHarness) async throws in
            #expect(try await h.node.nodeGetInfo(Csi_V1_NodeGetInfoRequest()).nodeID == "node-a")
            let types = try await h.node.nodeGetCapabilities(Csi_V1_NodeGetCapabilitiesRequest()).capabilities.map(\.rpc.type)
            #expect(types == [.getVolumeStats])
        }
    }

    /// Every request that is wrong on its face: answered INVALID_ARGUMENT before anything is
    /// created, pulled or mounted (so none of these needs a registry).
    @Test("publish: INVALID_ARGUMENT", arguments: [
        "no volume id", "no target", "relative target", "no capability", "no access type", "block", "no image", "empty image",
        "bad reference", "bad pullPolicy", "bad tlsVerify", "bad platform", "subPath escapes", "password without username",
        "username without password", "bad dockerconfigjson",
    ])
    func publishInvalidArgument(_ kind: String) async throws {
        try await PluginHarness.run { (h: PluginHarness) async throws in
            let target = h.dir + "/pods/p1/volumes/v1/mount"
            var request = publishRequest(target: target)
            switch kind {
            case "no volume id": request.volumeID = ""
            case "no target": request.targetPath = ""
            case "relative target": request.targetPath = "pods/p1/mount"
            case "no capability": request.clearVolumeCapability()
            case "no access type": request.volumeCapability.accessType = nil
            case "block": request = publishRequest(target: target, block: true)
            case "no image": request.volumeContext = ["pullPolicy": "Never"]
            case "empty image": request.volumeContext = ["image": ""]
            case "bad reference": request.volumeContext = ["image": "Not A/Reference::"]
            case "bad pullPolicy": request.volumeContext["pullPolicy"] = "Sometimes"
            case "bad tlsVerify": request.volumeContext["tlsVerify"] = "maybe"
            case "bad platform": request.volumeContext["platform"] = "linux"
            case "subPath escapes": request.volumeContext["subPath"] = "models/../../etc"
            case "password without username": request.secrets = ["password": "hunter2"]
            case "username without password": request.secrets = ["username": "me"]
            case "bad dockerconfigjson": request.secrets = [".dockerconfigjson": "{hunter2"]
            default: Issue.record("unknown case \(kind)")
            }
            let message = await statusMessage { _ = try await h.node.nodePublishVolume(request) }
            #expect(await statusCode { _ = try await h.node.nodePublishVolume(request) } == .invalidArgument)
            #expect(message?.contains("hunter2") == false, "secrets must not reach status messages")
            #expect(!FileManager.default.fileExists(atPath: target), "nothing is created for an invalid request")
        }
    }

    @Test func neverPullPolicyWithoutCacheIsFailedPreconditionAndLeavesNoDirectory() async throws {
        try await PluginHarness.run { (h: PluginHarness) async throws in
            let target = h.dir + "/pods/p1/volumes/v1/mount"
            let request = publishRequest(target: target, attributes: ["image": "127.0.0.1:1/models/llm:v1", "pullPolicy": "Never"])
            let message = await statusMessage { _ = try await h.node.nodePublishVolume(request) }
            #expect(await statusCode { _ = try await h.node.nodePublishVolume(request) } == .failedPrecondition)
            #expect(message?.contains("not cached") == true)
            #expect(!FileManager.default.fileExists(atPath: target), "a target the plugin created is removed on failure")
        }
    }

    @Test func aTargetKubeletCreatedIsKeptOnFailure() async throws {
        try await PluginHarness.run { (h: PluginHarness) async throws in
            let target = h.dir + "/pods/p1/volumes/v1/mount"
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            let request = publishRequest(target: target, attributes: ["image": "127.0.0.1:1/models/llm:v1", "pullPolicy": "Never"])
            #expect(await statusCode { _ = try await h.node.nodePublishVolume(request) } == .failedPrecondition)
            #expect(FileManager.default.fileExists(atPath: target))
        }
    }

    @Test func unpublishIsIdempotentAndRemovesTheTarget() async throws {
        try await PluginHarness.run { (h: PluginHarness) async throws in
            let target = h.dir + "/pods/p1/volumes/v1/mount"
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            var request = Csi_V1_NodeUnpublishVolumeRequest()
            request.volumeID = "never-published"
            request.targetPath = target
            _ = try await h.node.nodeUnpublishVolume(request)
            #expect(!FileManager.default.fileExists(atPath: target))
            _ = try await h.node.nodeUnpublishVolume(request)
        }
    }

    @Test func unpublishNeedsVolumeIDAndTarget() async throws {
        try await PluginHarness.run { (h: PluginHarness) async throws in
            var request = Csi_V1_NodeUnpublishVolumeRequest()
            request.targetPath = h.dir + "/x"
            #expect(await statusCode { _ = try await h.node.nodeUnpublishVolume(request) } == .invalidArgument)
            request.volumeID = "v"
            request.targetPath = ""
            #expect(await statusCode { _ = try await h.node.nodeUnpublishVolume(request) } == .invalidArgument)
        }
    }

    @Test func statsOfAnUnknownVolumeIsNotFound() async throws {
        try await PluginHarness.run { (h: PluginHarness) async throws in
            var request = Csi_V1_NodeGetVolumeStatsRequest()
            request.volumeID = "unknown"
            request.volumePath = h.dir + "/pods/p1/mount"
            #expect(await statusCode { _ = try await h.node.nodeGetVolumeStats(request) } == .notFound)
            request.volumeID = ""
            #expect(await statusCode { _ = try await h.node.nodeGetVolumeStats(request) } == .invalidArgument)
            request.volumeID = "unknown"
            request.volumePath = ""
            #expect(await statusCode { _ = try await h.node.nodeGetVolumeStats(request) } == .invalidArgument)
        }
    }

    @Test func stageUnstageAndExpandAreUnimplemented() async throws {
        try await PluginHarness.run { (h: PluginHarness) async throws in
            var stage = Csi_V1_NodeStageVolumeRequest()
            stage.volumeID = "v"
            #expect(await statusCode { _ = try await h.node.nodeStageVolume(stage) } == .unimplemented)
            var unstage = Csi_V1_NodeUnstageVolumeRequest()
            unstage.volumeID = "v"
            #expect(await statusCode { _ = try await h.node.nodeUnstageVolume(unstage) } == .unimplemented)
            var expand = Csi_V1_NodeExpandVolumeRequest()
            expand.volumeID = "v"
            #expect(await statusCode { _ = try await h.node.nodeExpandVolume(expand) } == .unimplemented)
        }
    }

    @Test func errorsAreCountedByRPCAndCodeAndServedOnMetrics() async throws {
        try await PluginHarness.run(metrics: true) { (h: PluginHarness) async throws in
            let request = publishRequest(target: h.dir + "/t", block: true)
            _ = await statusCode { _ = try await h.node.nodePublishVolume(request) }
            _ = try await h.identity.probe(Csi_V1_ProbeRequest())
            let text = try httpGet(port: h.metricsPort, path: "/metrics")
            #expect(text.hasPrefix("HTTP/1.1 200"))
            #expect(text.contains(#"imgvol_csi_rpc_errors_total{rpc="NodePublishVolume",code="INVALID_ARGUMENT"} 1"#))
            #expect(text.contains(#"imgvol_csi_rpcs_total{rpc="Probe",code="OK"} 1"#))
            #expect(text.contains("imgvol_csi_live_volumes 0"))
            #expect(text.contains("imgvol_csi_cache_size_bytes"))
            #expect(text.contains(#"imgvol_csi_pulls_total{result="success"} 0"#))
            #expect(try httpGet(port: h.metricsPort, path: "/other").hasPrefix("HTTP/1.1 404"))
        }
    }

    /// A volume persisted by an earlier run whose pod directory is gone (kubelet cleaned up
    /// while the plugin was down) is forgotten on start, without pulling or mounting.
    @Test func restoreForgetsVolumesWhosePodIsGone() async throws {
        try await PluginHarness.run(prepare: { dir, root in
            let file = VolumeStateFile(store: try ContentStore(root: root))
            try FileManager.default.createDirectory(atPath: root + "/tmp", withIntermediateDirectories: true)
            try file.save([PublishedVolume(volumeID: "old", targetPath: dir + "/gone-pod/volumes/v/mount", image: "127.0.0.1:1/a/b:c",
                                           digest: .of([1, 2, 3]), subPath: nil, attributes: ["image": "127.0.0.1:1/a/b:c"],
                                           publishedAt: "2024-01-01T00:00:00Z")])
        }) { (h: PluginHarness) async throws in
            // The restore holds the volume's lock; an unpublish for it waits for the restore.
            var request = Csi_V1_NodeUnpublishVolumeRequest()
            request.volumeID = "old"
            request.targetPath = h.dir + "/gone-pod/volumes/v/mount"
            _ = try await h.node.nodeUnpublishVolume(request)
            let state = try VolumeStateFile(store: try ContentStore(root: h.root)).load()
            #expect(state.isEmpty)
        }
    }
}

/// A plain HTTP/1.1 GET over a blocking socket to 127.0.0.1, returning the whole response.
func httpGet(port: Int, path: String) throws -> String {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw CSIError.internalError("socket failed") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw CSIError.internalError("connect to 127.0.0.1:\(port) failed") }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
    _ = request.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        response += buffer[0..<n]
    }
    return String(decoding: response, as: UTF8.self)
}
