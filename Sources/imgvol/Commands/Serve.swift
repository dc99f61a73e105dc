import ArgumentParser
import ImgvolCore
import OCI
#if canImport(Glibc)
import Glibc
#endif

/// The background server `imgvol mount` starts; not for direct use.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "__serve", shouldDisplay: false)

    @OptionGroup var global: GlobalOptions
    @Option var digest: String
    @Option var reference: String
    @Option var mountpoint: String
    @Option var subpath: String?

    func run() async throws {
        setsid()
        let logger = global.makeLogger()
        let store = try global.openStore()
        let service = ImageService(store: store, logger: logger)
        let record = try store.readImage(try Digest(digest))
        try MountServer(service: service, logger: logger).serve(record: record, reference: reference,
                                                                mountpoint: mountpoint, subpath: subpath)
    }
}
