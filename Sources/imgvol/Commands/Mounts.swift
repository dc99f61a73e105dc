import ArgumentParser
import Mounts
import OCI

struct Mounts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mounts", abstract: "List live imgvol mounts, or restart their servers.",
        discussion: """
            Each mount's /dev/fuse descriptor is held by a keeper process that restarts its \
            server when it dies; RESTARTS counts the servers replaced so far. --restart moves \
            every mount to the imgvol binary now installed (after an upgrade); readers see a \
            short stall, not an error.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(help: "Output format: table or json.")
    var format: OutputFormat = .table

    @Flag(help: "Restart every mount's server from the binary now installed (upgrade in place).")
    var restart = false

    struct Row: Encodable {
        var mountpoint: String
        var reference: String
        var digest: String
        var pid: Int32
        var keeper: Int32?
        var restarts: Int
    }

    func run() async throws {
        let table = MountTable(store: try global.openStore())
        if restart {
            for done in try await table.restartServers() {
                print("\(done.mountpoint): server \(done.previous) replaced by \(done.server)")
            }
            return
        }
        let rows = table.live().map {
            Row(mountpoint: $0.mountpoint, reference: $0.reference, digest: $0.digest.description, pid: $0.pid,
                keeper: $0.keeper, restarts: $0.restarts ?? 0)
        }
        switch format {
        case .json: print(String(decoding: JSONCoding.encode(rows, pretty: true), as: UTF8.self))
        case .table:
            printTable([["MOUNTPOINT", "REFERENCE", "DIGEST", "PID", "RESTARTS"]]
                + rows.map { [$0.mountpoint, $0.reference, String($0.digest.prefix(19)), String($0.pid), String($0.restarts)] })
        }
    }
}
