import ArgumentParser
import OCI

@main
struct Imgvol: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "imgvol",
        abstract: "Pull OCI images and artifacts into a shared, verified cache and use them as read-only volumes.",
        version: ImgvolVersion.current,
        subcommands: [Pull.self, Images.self, Inspect.self, Remove.self, Prune.self, Check.self, Unpack.self, Mount.self, Unmount.self, Mounts.self, VolumePluginCommand.self, CSICommand.self, Serve.self, Keep.self])

    /// Global options may come before the subcommand (`imgvol --root DIR pull REF`), as with
    /// podman; argument-parser wants them after it, so they are moved there.
    static func main() async {
        await main(GlobalOptions.hoisted(Array(CommandLine.arguments.dropFirst())))
    }
}
