import ArgumentParser
import Foundation
import Mounts
#if canImport(Glibc)
import Glibc
#endif

/// The keeper `imgvol mount` starts for each mount (`MountKeeper`); not for direct use.
struct Keep: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "__keep", shouldDisplay: false)

    @OptionGroup var global: GlobalOptions
    @Option var mountpoint: String
    @Option var source: String
    /// Set by a keeper executing itself again (an upgrade): the mount's descriptor.
    @Option(name: .customLong("adopt-fd")) var adoptFD: Int32?
    @Option var restarts = 0
    @Flag(name: .customLong("creds-from-stdin")) var credsFromStdin = false
    @Option(name: .customLong("creds-fd")) var credsFD: Int32?
    @Argument(parsing: .postTerminator) var serverArguments: [String] = []

    // Standard output is the readiness pipe of whoever launched this keeper.
    func run() throws {
        setsid()
        let logger = global.makeLogger()
        var credentials: String?
        if credsFromStdin { credentials = readLine(strippingNewline: true) }
        if let credsFD {
            let input = FileHandle(fileDescriptor: credsFD, closeOnDealloc: true)
            credentials = String(decoding: input.readDataToEndOfFile(), as: UTF8.self)
                .split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init)
        }
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let keeper = MountKeeper(configuration: .init(executable: executable, mountpoint: mountpoint, source: source,
                                                      serverArguments: serverArguments,
                                                      credentials: credentials.flatMap { $0.isEmpty ? nil : $0 },
                                                      logLevel: global.logLevel.rawValue),
                                 logger: logger)
        let status = try keeper.run(adopting: adoptFD, restarts: restarts)
        throw ExitCode(status)
    }
}
