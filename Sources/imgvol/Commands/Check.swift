import ArgumentParser
import Foundation
import OCI
import Pull
import Store

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Verify the store: every blob, layer, index and chunk sum against its digest.",
        discussion: """
            Reads every byte of the images given (all images when none is), prints what is damaged \
            and which images need it, and exits 1 if anything is. With --repair, damaged parts are \
            moved aside to ROOT/damaged (prune reclaims them) and fetched again from the registry \
            by the names that refer to their images; chunk sums are recorded again from bytes that \
            verify, with no registry. Damage a mount found while serving is listed until repaired.
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var pull: PullOptions

    @Flag(help: "Move damaged parts aside and pull their images again.")
    var repair = false

    @Option(help: "Output format: table or json.")
    var format: OutputFormat = .table

    @Argument(help: "Images to check (references or digests); all when none is given.")
    var references: [String] = []

    struct Output: Encodable {
        var checked: ContentStore.CheckReport
        /// Set with --repair: what a fresh check found after the repair.
        var afterRepair: ContentStore.CheckReport?
        var repulled: [String]
        var repairErrors: [String]
    }

    func run() async throws {
        let store = try global.openStore()
        let digests: [Digest]? = references.isEmpty ? nil : try references.map { try store.lookup($0).digest }
        let report = try store.check(images: digests)
        var output = Output(checked: report, afterRepair: nil, repulled: [], repairErrors: [])
        if repair, !report.damage.isEmpty {
            var refetch = Set<Digest>()
            for damage in report.damage where try store.repair(damage) { refetch.formUnion(damage.images) }
            let names = try store.references()
            let affected = Set(report.damage.flatMap(\.images))
            let logger = global.makeLogger()
            for (name, digest) in names.sorted(by: { $0.key < $1.key }) where refetch.contains(digest) {
                do {
                    let reference = try Reference(name)
                    _ = try await pull.withSession(store: store, logger: logger) { try await $0.pull(reference) }
                    output.repulled.append(name)
                } catch {
                    output.repairErrors.append("\(name): \(error)")
                }
            }
            output.afterRepair = try store.check(images: affected.sorted())
        }
        let remaining = (output.afterRepair ?? report).damage
        switch format {
        case .json:
            print(String(decoding: JSONCoding.encode(output, pretty: true), as: UTF8.self))
        case .table:
            print("checked \(report.images) images, \(report.layers) layers, \(report.blobs) blobs")
            for damage in report.damage {
                print("damaged \(damage.part.rawValue) \(damage.digest): \(damage.problem); needed by \(damage.images.map { String($0.hex.prefix(12)) }.joined(separator: ", "))")
            }
            for name in output.repulled { print("repaired by pulling \(name)") }
            for line in output.repairErrors { print("not repaired: \(line)") }
            if remaining.isEmpty {
                print(report.damage.isEmpty ? "no damage" : "no damage left")
            }
        }
        if !remaining.isEmpty {
            let advice = repair ? "the registry could not supply them; pull the images again once it can"
                : "run `imgvol check --repair` to move them aside and fetch them again"
            FileHandle.standardError.write(Data("Error: \(remaining.count) damaged part(s) in the store at \(store.root); \(advice)\n".utf8))
            throw ExitCode.failure
        }
    }
}
