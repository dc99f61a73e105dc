import ArgumentParser
import Mounts
import Pull
import OCI
import Registry
import Store
#if canImport(Glibc)
import Glibc
#endif

/// The background server `imgvol mount` starts; not for direct use.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "__serve", shouldDisplay: false)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var pull: PullOptions
    @Option var digest: String?
    @Option var reference: String
    @Option var mountpoint: String
    @Option var subpath: String?
    @Flag var lazy = false
    @Flag(name: .customLong("creds-from-stdin")) var credsFromStdin = false
    /// Set by the keeper (`__keep`): the descriptor of the mount it holds.
    @Option(name: .customLong("fuse-fd")) var fuseFD: Int32?
    @Option var keeper: Int32?
    @Option var restarts = 0
    /// A server before this one served the mount: take its session over.
    @Flag(name: .customLong("take-over")) var takeOver = false

    // Standard output is the readiness pipe of whoever launched this server.
    func run() async throws {
        setsid()
        let logger = global.makeLogger()
        let store = try global.openStore()
        var server = MountServer(store: store, logger: logger)
        server.onReady = { ServerReadiness.signal() }
        var attachment = MountServer.Attachment.mountHere
        var pinned: Digest? = try digest.map { try Digest($0) }
        if let fuseFD {
            let session = takeOver ? try MountTable(store: store).readSession(for: mountpoint) : nil
            if let session { pinned = session.digest }
            attachment = .kept(KeptMount(fd: fuseFD, keeper: keeper ?? getppid(), restarts: restarts, session: session))
        }
        // A lazy mount taken over serves what the first server resolved; from the store
        // once it has all of it.
        if lazy, let pinned, let record = try store.completeImage(Reference(reference).withDigest(pinned)) {
            try server.serve(record: record, reference: reference, mountpoint: mountpoint, subpath: subpath, attachment: attachment)
            return
        }
        guard lazy else {
            guard let pinned else { throw ValidationError("--digest is required without --lazy") }
            let record = try store.readImage(pinned)
            try server.serve(record: record, reference: reference, mountpoint: mountpoint, subpath: subpath, attachment: attachment)
            return
        }
        var pull = self.pull
        if credsFromStdin, let line = readLine(strippingNewline: true), !line.isEmpty { pull.creds = line }
        let reference = try Reference(self.reference)
        try await pull.withSession(store: store, logger: logger) { session in
            try await session.lazily(reference, pinned: pinned) { lazyPull in
                try await server.serve(lazyPull, reference: reference.description, mountpoint: mountpoint, subpath: subpath,
                                       attachment: attachment)
            }
        }
    }
}
