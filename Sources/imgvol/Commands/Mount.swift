import ArgumentParser
import FileIO
import Foundation
import ImageFS
import Mounts
import Pull
import OCI
import Logging
import Store
#if canImport(Glibc)
import Glibc
#endif

struct Mount: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount an image read-only with FUSE (pulling it as needed).",
        discussion: """
            Returns once the mount serves; the server keeps running in the background and logs \
            under ROOT/mounts/. Mounts are ro,nosuid,nodev,default_permissions,allow_other \
            (non-root users need user_allow_other in /etc/fuse.conf).
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var pull: PullOptions

    @Option(name: .customLong("pull"), help: "When to pull: always, missing (default), never.")
    var policy: PullPolicy = .missing

    @Option(help: ArgumentHelp("Serve only this directory of the image.", valueName: "dir"))
    var subpath: String?

    @Flag(help: "Stay attached; unmount cleanly on SIGINT/SIGTERM.")
    var foreground = false

    @Flag(help: ArgumentHelp("Serve before the image has arrived: files are fetched on demand with HTTP Range requests while the rest downloads; each blob is verified when complete (reads of a blob that fails fail with EIO).", discussion: "Raw and uncompressed tar layers are lazy; compressed tar layers are pulled in full first."))
    var lazy = false

    @Argument(help: "Image reference.")
    var reference: String

    @Argument(help: "Existing empty directory to mount on.")
    var mountpoint: String

    func run() async throws {
        let reference = try Reference(self.reference)
        let logger = global.makeLogger()
        let store = try global.openStore()
        // Resolved once and held until the server serves: two mounts onto one directory, from
        // any store, never stack.
        let claimed = try Mountpoint.claim(self.mountpoint, store: store)
        defer { claimed.release() }
        let mountpoint = claimed.path
        if lazy, try needsLazyPull(reference, store: store) {
            try await mountLazily(reference, mountpoint: mountpoint, store: store, logger: logger)
            return
        }
        let record = try await pull.image(reference, policy: policy, store: store, logger: logger)
        // Refuse a bad --subpath before anything is mounted (the tree is built again by the
        // server; without --subpath there is nothing to check).
        if subpath != nil {
            let tree = try ImageTrees(store: store, logger: logger).tree(of: record)
            _ = try MountServer.subpathRoot(subpath, in: tree, reference: reference.description)
        }
        if foreground {
            try MountServer(store: store, logger: logger).serve(record: record, reference: reference.description,
                                                                    mountpoint: mountpoint, subpath: subpath)
            return
        }
        _ = try await MountLauncher(store: store, logLevel: global.logLevel.rawValue)
            .launch(reference: reference, digest: record.digest, mountpoint: mountpoint, subpath: subpath)
        print(mountpoint)
    }

    /// Lazy only matters when the image is not (or, with --pull always, may not be) cached.
    private func needsLazyPull(_ reference: Reference, store: ContentStore) throws -> Bool {
        if policy != .always, try store.completeImage(reference, platform: try pull.targetPlatform()) != nil { return false }
        guard policy != .never else {
            throw PullError(.notCached, "image \(reference) is not in the store at \(store.root) and --pull=never was given; pull it first (or drop --pull=never to mount it lazily)")
        }
        return true
    }

    private func mountLazily(_ reference: Reference, mountpoint: String, store: ContentStore, logger: Logger) async throws {
        if foreground {
            try await pull.withSession(store: store, logger: logger) { session in
                try await session.lazily(reference) { lazyPull in
                    try await MountServer(store: store, logger: logger)
                        .serve(lazyPull, reference: reference.description, mountpoint: mountpoint, subpath: subpath)
                }
            }
            return
        }
        _ = try pull.clientOptions()   // refuse bad flags here, not in the server's log
        let source = MountLauncher.LazySource(pullArguments: pull.forwardedArguments, credentials: pull.creds)
        _ = try await MountLauncher(store: store, logLevel: global.logLevel.rawValue)
            .launch(reference: reference, digest: nil, mountpoint: mountpoint, subpath: subpath, lazy: source)
        print(mountpoint)
    }
}
