import ArgumentParser
import VolumePlugin

struct VolumePluginCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "volume-plugin",
        abstract: "Serve the Docker/podman volume plugin API, so `podman volume create --driver imgvol --opt image=REF NAME` works.",
        discussion: """
            Register it in containers.conf:
              [engine.volume_plugins]
              imgvol = "/run/docker/plugins/imgvol.sock"
            Volume options: image=REF (required), subpath=DIR, pull=always|missing|never, tls-verify=false, platform=os/arch.
            The image is mounted on first use and unmounted when the last container stops.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(help: ArgumentHelp("Unix socket to listen on.", valueName: "path"))
    var socket = "/run/docker/plugins/imgvol.sock"

    func run() async throws {
        let logger = global.makeLogger()
        try await VolumePluginServer(socketPath: socket, store: try global.openStore(), logger: logger).run()
    }
}
