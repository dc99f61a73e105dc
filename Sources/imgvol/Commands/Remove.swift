import ArgumentParser
import Mounts
import OCI
import Store

struct Remove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove images from the store (and the layers no other image uses).")

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Remove the reference even if a live mount serves the image (the mount keeps working; the data goes when it is unmounted and pruned).")
    var force = false

    @Argument(help: "Image references or digests.")
    var references: [String]

    func validate() throws {
        guard !references.isEmpty else { throw ValidationError("give at least one image to remove") }
    }

    func run() async throws {
        let store = try global.openStore()
        let mounts = MountTable(store: store).live()
        for text in references {
            let (names, digest) = try store.lookup(text)
            if !force, let mount = mounts.first(where: { $0.digest == digest }) {
                throw MountServer.Failure("image \(text) is in use by the mount at \(mount.mountpoint) (pid \(mount.pid)); unmount it first or pass --force")
            }
            // A reference removes that name; a digest removes every name of the image.
            let reference = try? Reference(text)
            let targets = reference.map { r in names.contains(r.description) ? [r.description] : names } ?? names
            for name in targets { _ = try await store.removeReference(name) }
            print(targets.isEmpty ? digest.description : targets.joined(separator: "\n"))
        }
        _ = try await store.collectGarbage(keep: Set(mounts.map(\.digest)))
    }
}
