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
        var damaged: [String] = []
        for (name, digest) in try store.references().sorted(by: { $0.key < $1.key }) {
            do {
                let record = try store.readImage(digest)
                rows.append(Row(reference: name, digest: digest.description, size: store.diskUsage(of: record), created: record.created ?? ""))
            } catch {
                damaged.append("\(name): \(error)")
            }
        }
        defer {
            // Listed after the rows, so a damaged record neither hides the others nor passes unseen.
            for line in damaged { FileHandle.standardError.write(Data("imgvol: \(line)\n".utf8)) }
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
        if !damaged.isEmpty { throw ExitCode.failure }
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
