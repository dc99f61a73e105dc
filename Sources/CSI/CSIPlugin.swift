import FileIO
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Mounts
import OCI
import Logging
import Store

/// The CSI node plugin: Identity and Node services over gRPC on a unix socket, plus an
/// optional Prometheus endpoint. `imgvol csi` runs one; tests run several in one process.
public final class CSIPlugin: Sendable {
    public struct Configuration: Sendable {
        /// `unix:///csi/csi.sock`
        public var endpoint: String
        public var nodeID: String
        public var driverName = "csi.imgvol.dev"
        public var version = ImgvolVersion.current
        /// `HOST:PORT` for `/metrics`; nil for none.
        public var metricsAddress: String?
        /// registries.conf for pulls; nil for the default search.
        public var registriesConf: String?
        /// Log level handed to the mount servers.
        public var mountLogLevel = "notice"

        public init(endpoint: String, nodeID: String) {
            self.endpoint = endpoint
            self.nodeID = nodeID
        }
    }

    public let configuration: Configuration
    public let metrics: CSIMetrics
    let socketPath: String
    let logger: Logger
    let volumes: VolumeManager
    let ready = ReadyFlag()
    let metricsServer: MetricsServer?

    /// Checks the configuration and loads the state; serves nothing yet.
    public init(configuration: Configuration, store: ContentStore, logger: Logger) throws {
        guard !configuration.nodeID.isEmpty else { throw CSIError.invalidArgument("--node-id is required (the Kubernetes node name)") }
        guard !configuration.driverName.isEmpty else { throw CSIError.invalidArgument("--driver-name must not be empty") }
        self.configuration = configuration
        self.socketPath = try CSIEndpoint(configuration.endpoint).socketPath
        self.logger = logger
        let metrics = CSIMetrics(store: store)
        self.metrics = metrics
        self.metricsServer = try configuration.metricsAddress.map { try MetricsServer(address: $0, metrics: metrics, logger: logger) }
        let table = try VolumeTable(file: VolumeStateFile(store: store))
        let images = ImageSource(store: store, logger: logger, coordinator: PullCoordinator(), metrics: metrics,
                                 registriesConf: configuration.registriesConf)
        self.volumes = VolumeManager(store: store, logger: logger, table: table, images: images,
                                     launcher: MountLauncher(store: store, logLevel: configuration.mountLogLevel), metrics: metrics,
                                     watch: try ProcessWatch())
    }

    /// Restores published volumes, then serves until the calling task is cancelled.
    /// `onListening` gets the metrics port (0 without metrics) once both listeners are bound.
    public func run(onListening: @Sendable (Int) -> Void = { _ in }) async throws {
        await volumes.restore()
        try FileSystem.makeDirectories(FileSystem.parent(of: socketPath), mode: 0o755)
        // A socket left by a previous run would make bind fail with EADDRINUSE.
        try FileSystem.remove(socketPath)

        let log = RPCLog(logger: logger, metrics: metrics)
        let transport = HTTP2ServerTransport.Posix(address: .unixDomainSocket(path: socketPath), transportSecurity: .plaintext)
        let server = GRPCServer(transport: transport, services: [
            IdentityService(driverName: configuration.driverName, version: configuration.version, ready: ready, log: log),
            NodeService(nodeID: configuration.nodeID, volumes: volumes, log: log),
        ])
        let metricsChannel = try await metricsServer?.bind()
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await server.serve() }
            if let metricsServer, let metricsChannel {
                group.addTask { try await metricsServer.serve(metricsChannel) }
            }
            _ = try await transport.listeningAddress
            ready.set()
            let port = metricsChannel?.channel.localAddress?.port ?? 0
            logger.notice("CSI driver \(configuration.driverName) \(configuration.version) on node \(configuration.nodeID) listening on unix://\(socketPath)\(metricsChannel == nil ? "" : ", metrics on port \(port)")")
            onListening(port)
        }
    }
}
