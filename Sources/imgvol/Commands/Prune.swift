import ArgumentParser
import Mounts
import OCI
import Store

struct Prune: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "prune", abstract: "Remove everything no image reference needs; prints the bytes freed.")

    @OptionGroup var global: GlobalOptions

    @Option(help: "Output format: table or json.")
    var format: OutputFormat = .table

    struct Report: Encodable {
        var freedBytes: Int64
        var removedImages: [String]
        var removedLayers: [String]
    }

    func run() async throws {
        let store = try global.openStore()
        // What live mounts serve stays, referenced or not; records of ended mounts go.
        let mounts = try MountTable(store: store).sweep()
        let report = try await store.collectGarbage(keep: mounts.served)
        switch format {
        case .json:
            let out = Report(freedBytes: report.freedBytes, removedImages: report.removedImages.map(\.description),
                             removedLayers: report.removedLayers.map(\.description))
            print(String(decoding: JSONCoding.encode(out, pretty: true), as: UTF8.self))
        case .table:
            print("Total reclaimed space: \(ProgressDisplay.bytes(report.freedBytes)) (\(report.freedBytes) bytes)")
        }
    }
}
