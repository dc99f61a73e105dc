@testable import CSI
import CSIProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import Store

/// A CSI plugin running in this process on a socket in a fresh temp directory, with
/// generated clients connected to it over `unix:`. Everything is torn down when `body` returns.
struct PluginHarness: Sendable {
    typealias Transport = HTTP2ClientTransport.Posix

    let dir: String
    let root: String
    let socketPath: String
    let plugin: CSIPlugin
    let identity: Csi_V1_Identity.Client<Transport>
    let node: Csi_V1_Node.Client<Transport>
    let metricsPort: Int

    static let quietLogger = Logger(label: "csi-tests") { _ in SwiftLogNoOpLogHandler() }

    static func run<T: Sendable>(
        driverName: String? = nil,
        metrics: Bool = false,
        prepare: (_ dir: String, _ root: String) throws -> Void = { _, _ in },
        _ body: (PluginHarness) async throws -> T
    ) async throws -> T {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let root = dir + "/root"
        let socketPath = dir + "/plugins/csi.sock"
        try prepare(dir, root)
        var configuration = CSIPlugin.Configuration(endpoint: "unix://" + socketPath, nodeID: "node-a")
        if let driverName { configuration.driverName = driverName }
        if metrics { configuration.metricsAddress = "127.0.0.1:0" }
        let plugin = try CSIPlugin(configuration: configuration, store: try ContentStore(root: root), logger: quietLogger)

        let (listening, continuation) = AsyncStream.makeStream(of: Int.self)
        let server = Task { try await plugin.run(onListening: { continuation.yield($0); continuation.finish() }) }
        defer { server.cancel() }
        var port: Int?
        for await value in listening { port = value }
        guard let port else {
            _ = try await server.value
            throw CSIError.internalError("the plugin stopped before listening")
        }

        let transport = try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: socketPath), transportSecurity: .plaintext)
        let result = try await withGRPCClient(transport: transport) { client in
            try await body(PluginHarness(dir: dir, root: root, socketPath: socketPath, plugin: plugin,
                                         identity: Csi_V1_Identity.Client(wrapping: client),
                                         node: Csi_V1_Node.Client(wrapping: client), metricsPort: port))
        }
        server.cancel()
        _ = await server.result
        return result
    }

    static func makeTempDir() throws -> String {
        var template = Array("/tmp/imgvol-csi-tests.XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw CocoaError(.fileWriteUnknown) }
        return String(cString: made)
    }
}

/// A publish request that passes validation unless a test breaks one field.
func publishRequest(volumeID: String = "vol-1", target: String, attributes: [String: String] = ["image": "127.0.0.1:1/none/image:v1"],
                    secrets: [String: String] = [:], block: Bool = false) -> Csi_V1_NodePublishVolumeRequest {
    var request = Csi_V1_NodePublishVolumeRequest()
    request.volumeID = volumeID
    request.targetPath = target
    var capability = Csi_V1_VolumeCapability()
    if block { capability.block = Csi_V1_VolumeCapability.BlockVolume() } else { capability.mount = Csi_V1_VolumeCapability.MountVolume() }
    var mode = Csi_V1_VolumeCapability.AccessMode()
    mode.mode = .singleNodeWriter
    capability.accessMode = mode
    request.volumeCapability = capability
    request.volumeContext = attributes
    request.secrets = secrets
    return request
}

/// The status code `body` failed with; nil when it succeeded.
func statusCode(_ body: () async throws -> Void) async -> RPCError.Code? {
    do {
        try await body()
        return nil
    } catch let error as RPCError {
        return error.code
    } catch {
        return .unknown
    }
}

/// The status message `body` failed with.
func statusMessage(_ body: () async throws -> Void) async -> String? {
    do {
        try await body()
        return nil
    } catch let error as RPCError {
        return error.message
    } catch {
        return "\(error)"
    }
}
