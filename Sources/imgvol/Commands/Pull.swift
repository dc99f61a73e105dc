import ArgumentParser
import Pull
import OCI

struct Pull: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pull",
        abstract: "Pull an image into the store, verifying every blob.",
        discussion: "Prints the image digest (the platform manifest's) on success.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var pull: PullOptions

    @Argument(help: "Image reference: [registry[:port]/]repository[:tag][@sha256:digest].")
    var reference: String

    func run() async throws {
        ShortLivedProcess.enable()
        let reference = try Reference(self.reference)
        let logger = global.makeLogger()
        let store = try global.openStore()
        let record = try await pull.withSession(store: store, logger: logger) { try await $0.pull(reference) }
        print(record.digest)
    }
}
