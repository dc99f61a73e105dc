import ArgumentParser
import CSI
import Logging

/// `imgvol csi`: the Kubernetes CSI node plugin, run by the node DaemonSet next to the
/// node-driver-registrar sidecar.
struct CSICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "csi",
        abstract: "Serve the Kubernetes CSI node plugin (Identity + Node) on a unix socket.",
        discussion: """
            Volumes (inline ephemeral or pre-provisioned PVs) take volumeAttributes: image=REF (required), \
            pullPolicy=Always|IfNotPresent|Never, subPath=DIR, platform=os/arch, tlsVerify=false. Registry \
            credentials come from the volume's secret: .dockerconfigjson, or username and password. \
            Mounts are always read-only and are served by background processes that survive a plugin \
            restart; published volumes are recorded in ROOT/csi/volumes.json and restored on start.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(help: ArgumentHelp("gRPC endpoint (unix socket).", valueName: "unix:///path"))
    var endpoint = "unix:///csi/csi.sock"

    @Option(name: .customLong("node-id"), help: ArgumentHelp("This node's name (NodeGetInfo).", valueName: "name"))
    var nodeID: String

    @Option(name: .customLong("driver-name"), help: ArgumentHelp("CSI driver name.", valueName: "name"))
    var driverName = "csi.imgvol.dev"

    @Option(name: .customLong("metrics-address"), help: ArgumentHelp("Serve Prometheus metrics on /metrics here.", valueName: "host:port"))
    var metricsAddress: String?

    @Option(name: .customLong("registries-conf"), help: ArgumentHelp("registries.conf (v2) with mirrors and rewrites.", valueName: "path"))
    var registriesConf: String?

    func run() async throws {
        // Every RPC is logged at info (failures at warning and above); a node plugin's log is
        // where operators look first, so info is its default unless --log-level is given.
        var global = self.global
        if !CommandLine.arguments.contains(where: { $0 == "--log-level" || $0.hasPrefix("--log-level=") }) {
            global.logLevel = .info
        }
        let logger = global.makeLogger()
        var configuration = CSIPlugin.Configuration(endpoint: endpoint, nodeID: nodeID)
        configuration.driverName = driverName
        configuration.version = Imgvol.configuration.version
        configuration.metricsAddress = metricsAddress
        configuration.registriesConf = registriesConf
        configuration.mountLogLevel = global.logLevel.rawValue
        let plugin = try CSIPlugin(configuration: configuration, store: try global.openStore(), logger: logger)
        try await plugin.run()
    }
}
