import ArgumentParser
import Mounts
import Pull
import OCI
import Registry
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

    // Standard output is the readiness pipe of whoever launched this server (`ServerProcess`).
    func run() async throws {
        setsid()
        let logger = global.makeLogger()
        let store = try global.openStore()
        var server = MountServer(store: store, logger: logger)
        server.onReady = { ServerReadiness.signal() }
        guard lazy else {
            guard let digest else { throw ValidationError("--digest is required without --lazy") }
            let record = try store.readImage(try Digest(digest))
            try server.serve(record: record, reference: reference, mountpoint: mountpoint, subpath: subpath)
            return
        }
        var pull = self.pull
        if credsFromStdin, let line = readLine(strippingNewline: true), !line.isEmpty { pull.creds = line }
        let reference = try Reference(self.reference)
        try await pull.withSession(store: store, logger: logger) { session in
            try await session.lazily(reference) { lazyPull in
                try await server.serve(lazyPull, reference: reference.description, mountpoint: mountpoint, subpath: subpath)
            }
        }
    }
}
