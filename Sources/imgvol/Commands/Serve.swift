import ArgumentParser
import ImgvolCore
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

    func run() async throws {
        setsid()
        let logger = global.makeLogger()
        let store = try global.openStore()
        let service = ImageService(store: store, logger: logger)
        let server = MountServer(service: service, logger: logger)
        guard lazy else {
            guard let digest else { throw ValidationError("--digest is required without --lazy") }
            let record = try store.readImage(try Digest(digest))
            try server.serve(record: record, reference: reference, mountpoint: mountpoint, subpath: subpath)
            return
        }
        var pull = self.pull
        if credsFromStdin, let line = readLine(strippingNewline: true), !line.isEmpty { pull.creds = line }
        let reference = try Reference(self.reference)
        try await pull.withPuller(store: store, logger: logger) { puller in
            let lazyPull = try await LazyPull.start(reference, puller: puller)
            try await server.serve(lazyPull, reference: reference.description, mountpoint: mountpoint, subpath: subpath)
        }
    }
}
