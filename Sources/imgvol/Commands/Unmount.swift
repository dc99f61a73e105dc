import ArgumentParser
import Mounts

struct Unmount: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unmount",
        abstract: "Unmount an imgvol mount (also when its server has died).")

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Detach even if busy (lazy unmount).")
    var force = false

    @Argument(help: "Mountpoint.")
    var mountpoint: String

    func run() async throws {
        let store = try global.openStore()
        try await MountLauncher(store: store).unmount(MountTable.absolute(mountpoint), force: force)
    }
}
