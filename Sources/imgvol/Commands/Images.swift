import ArgumentParser
import Foundation

import OCI
import Store

struct Images: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "images", abstract: "List the images in the store.")

    @OptionGroup var global: GlobalOptions

    @Option(help: "Output format: table or json.")
    var format: OutputFormat = .table

    struct Row: Encodable {
        var reference: String
        var digest: String
        var size: Int64
        var created: String
    }

    func run() async throws {
        let store = try global.openStore()
        var rows: [Row] = []
        let refs = store.references()
        for (name, digest) in refs.sorted(by: { $0.key < $1.key }) {
            guard let record = try? store.readImage(digest) else { continue }
            rows.append(Row(reference: name, digest: digest.description, size: store.diskUsage(of: record), created: record.created ?? ""))
        }
        switch format {
        case .json:
            print(String(decoding: JSONCoding.encode(rows, pretty: true), as: UTF8.self))
        case .table:
            let table = [["REFERENCE", "DIGEST", "SIZE", "CREATED"]] + rows.map {
                [$0.reference, String($0.digest.prefix(19)), ProgressDisplay.bytes($0.size), $0.created]
            }
            printTable(table)
        }
    }
}

func printTable(_ rows: [[String]]) {
    guard let first = rows.first else { return }
    let widths = first.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
    for row in rows {
        let cells = row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
        print(cells.joined(separator: "  "))
    }
}
