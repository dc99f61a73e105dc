import ArgumentParser
import FileIO
import Foundation
import ImgvolCore
import OCI
import Store
#if canImport(Glibc)
import Glibc
#endif

struct Mount: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mount an image read-only with FUSE (pulling it as needed).",
        discussion: """
            Returns once the mount serves; the server keeps running in the background and logs \
            under ROOT/mounts/. Mounts are ro,nosuid,nodev,default_permissions,allow_other \
            (non-root users need user_allow_other in /etc/fuse.conf).
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var pull: PullOptions

    @Option(name: .customLong("pull"), help: "When to pull: always, missing (default), never.")
    var policy: ImageService.PullPolicy = .missing

    @Option(help: ArgumentHelp("Serve only this directory of the image.", valueName: "dir"))
    var subpath: String?

    @Flag(help: "Stay attached; unmount cleanly on SIGINT/SIGTERM.")
    var foreground = false

    @Argument(help: "Image reference.")
    var reference: String

    @Argument(help: "Existing empty directory to mount on.")
    var mountpoint: String

    func run() async throws {
        let reference = try Reference(self.reference)
        let mountpoint = MountTable.absolute(self.mountpoint)
        try MountServer.checkMountpoint(mountpoint)
        let logger = global.makeLogger()
        let store = try global.openStore()
        let service = ImageService(store: store, logger: logger)
        let record = try await pull.withPuller(store: store, logger: logger) { puller in
            try await service.image(reference, policy: policy) { puller }
        }
        // Refuse a bad --subpath before anything is mounted.
        _ = try MountServer.subpathRoot(subpath, in: try service.tree(of: record), reference: reference.description)
        if foreground {
            try MountServer(service: service, logger: logger).serve(record: record, reference: reference.description,
                                                                    mountpoint: mountpoint, subpath: subpath)
            return
        }
        try await spawnServer(store: store, reference: reference, digest: record.digest, mountpoint: mountpoint)
        print(mountpoint)
    }

    /// Starts `imgvol __serve` detached and waits until its mount record shows it serving.
    private func spawnServer(store: ContentStore, reference: Reference, digest: Digest, mountpoint: String) async throws {
        let table = MountTable(store: store)
        let logPath = table.logPath(mountpoint)
        var arguments = ["__serve", "--root", store.root, "--log-level", global.logLevel.rawValue,
                         "--digest", digest.description, "--reference", reference.description, "--mountpoint", mountpoint]
        if let subpath { arguments += ["--subpath", subpath] }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        guard let log = FileHandle(forWritingAtPath: logPath) ?? {
            FileManager.default.createFile(atPath: logPath, contents: nil, attributes: [.posixPermissions: 0o600])
            return FileHandle(forWritingAtPath: logPath)
        }() else { throw MountServer.Failure("cannot write the mount log \(logPath)") }
        log.truncateFile(atOffset: 0)
        process.standardOutput = log
        process.standardError = log
        try process.run()
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if let record = table.record(for: mountpoint), record.pid == process.processIdentifier { return }
            if !process.isRunning {
                let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
                let last = text.split(separator: "\n").last(where: { !$0.isEmpty }).map(String.init) ?? "no message"
                throw MountServer.Failure("mounting \(reference) at \(mountpoint) failed: \(last)")
            }
            try await Task.sleep(nanoseconds: 2_000_000)
        }
        process.terminate()
        throw MountServer.Failure("mounting \(reference) at \(mountpoint) did not complete in 60 s; see \(logPath)")
    }
}


