import ArgumentParser
import Mounts
import OCI

struct Mounts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "mounts", abstract: "List live imgvol mounts.")

    @OptionGroup var global: GlobalOptions

    @Option(help: "Output format: table or json.")
    var format: OutputFormat = .table

    struct Row: Encodable {
        var mountpoint: String
        var reference: String
        var digest: String
        var pid: Int32
    }

    func run() async throws {
        let rows = MountTable(store: try global.openStore()).live().map {
            Row(mountpoint: $0.mountpoint, reference: $0.reference, digest: $0.digest.description, pid: $0.pid)
        }
        switch format {
        case .json: print(String(decoding: JSONCoding.encode(rows, pretty: true), as: UTF8.self))
        case .table: printTable([["MOUNTPOINT", "REFERENCE", "DIGEST", "PID"]] + rows.map { [$0.mountpoint, $0.reference, String($0.digest.prefix(19)), String($0.pid)] })
        }
    }
}
