import ArgumentParser
import Foundation
import ImageFS
import Pull
import OCI

struct Unpack: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unpack",
        abstract: "Write an image's merged tree into a directory (for tools that cannot use a mount).",
        discussion: "Device nodes are recorded in the store but never created. DIR must be new or empty.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var pull: PullOptions

    @Option(name: .customLong("pull"), help: "When to pull: always, missing (default), never.")
    var policy: PullPolicy = .missing

    @Argument(help: "Image reference.")
    var reference: String

    @Argument(help: "Target directory.")
    var directory: String

    func run() async throws {
        ShortLivedProcess.enable()
        let reference = try Reference(self.reference)
        let logger = global.makeLogger()
        let store = try global.openStore()
        let record = try await pull.image(reference, policy: policy, store: store, logger: logger)
        let trees = ImageTrees(store: store, logger: logger)
        let tree = try trees.tree(of: record)
        var unpacker = Unpacker(tree: tree, layers: try trees.layerData(of: record))
        unpacker.onSkip = { path, kind in logger.info("skipped \(kind) \(path)") }
        try unpacker.unpack(into: directory)
        ShortLivedProcess.keepUntilExit(tree)
    }
}

extension PullPolicy: ExpressibleByArgument {}
