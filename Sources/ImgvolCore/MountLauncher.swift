import FileIO
import Foundation
import OCI
import Store
#if canImport(Glibc)
import Glibc
#endif

/// Starts and stops background mount servers (`imgvol __serve`), for the CLI, the volume
/// plugin and the CSI plugin alike. A server outlives whoever started it: it runs in its own
/// session, so restarting a plugin does not take its mounts down.
public struct MountLauncher: Sendable {
    public let store: ContentStore
    public let executable: String
    public let logLevel: String

    public init(store: ContentStore, logLevel: String = "notice") {
        self.store = store
        self.executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        self.logLevel = logLevel
    }

    /// How a lazy server reaches the registry: the pull flags to pass on, and credentials,
    /// which go through a pipe, never the command line.
    public struct LazySource: Sendable {
        public var pullArguments: [String]
        public var credentials: String?

        public init(pullArguments: [String], credentials: String?) {
            self.pullArguments = pullArguments
            self.credentials = credentials
        }
    }

    /// Returns once the kernel handshake is done and the mount answers. With `lazy`, the server
    /// resolves the reference itself and serves while the blobs arrive (`digest` is unused).
    public func launch(reference: Reference, digest: Digest?, mountpoint: String, subpath: String?,
                       lazy: LazySource? = nil) async throws -> MountRecord {
        let table = MountTable(store: store)
        let logPath = table.logPath(mountpoint)
        var arguments = ["__serve", "--root", store.root, "--log-level", logLevel,
                         "--reference", reference.description, "--mountpoint", mountpoint]
        if let subpath { arguments += ["--subpath", subpath] }
        if let lazy {
            arguments += ["--lazy"] + lazy.pullArguments + (lazy.credentials != nil ? ["--creds-from-stdin"] : [])
        } else if let digest {
            arguments += ["--digest", digest.description]
        }
        _ = FileManager.default.createFile(atPath: logPath, contents: nil, attributes: [.posixPermissions: 0o600])
        guard let log = FileHandle(forWritingAtPath: logPath) else {
            throw MountServer.Failure("cannot write the mount log \(logPath)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let input = lazy?.credentials != nil ? Pipe() : nil
        process.standardInput = input ?? FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        try process.run()
        try? log.close()
        if let input, let credentials = lazy?.credentials {
            try? input.fileHandleForWriting.write(contentsOf: Array((credentials + "\n").utf8))
            try? input.fileHandleForWriting.close()
        }
        // A lazy server may first pull compressed layers in full.
        let deadline = Date().addingTimeInterval(lazy == nil ? 60 : 3600)
        while Date() < deadline {
            if let record = table.record(for: mountpoint), record.pid == process.processIdentifier { return record }
            if !process.isRunning {
                let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
                let last = text.split(separator: "\n").last(where: { !$0.isEmpty }).map(String.init) ?? "no message"
                throw MountServer.Failure("mounting \(reference) at \(mountpoint) failed: \(last)")
            }
            try await Task.sleep(nanoseconds: 2_000_000)
        }
        process.terminate()
        throw MountServer.Failure("mounting \(reference) at \(mountpoint) did not complete in time; see \(logPath)")
    }

    /// Unmounts (lazily with `force`), then stops the server if it is still there. Works when
    /// the server has died and the mount answers ENOTCONN.
    public func unmount(_ mountpoint: String, force: Bool) async throws {
        let table = MountTable(store: store)
        let record = table.record(for: mountpoint)
        if let foreign = MountTable.kernelMounts().last(where: { $0.mountpoint == mountpoint }), foreign.fstype != "fuse.imgvol" {
            throw MountServer.Failure("\(mountpoint) is not an imgvol mount (it is \(foreign.fstype) from \(foreign.source)); use umount for it")
        }
        if umount2(mountpoint, 0) != 0 {
            let error = errno
            switch error {
            case EBUSY where force:
                if umount2(mountpoint, Int32(MNT_DETACH)) != 0 { throw SystemError("umount", mountpoint) }
            case EBUSY:
                throw MountServer.Failure("\(mountpoint) is busy (a process uses it); stop it or pass --force for a lazy unmount")
            case EINVAL where !MountTable.isMountpoint(mountpoint), ENOENT:
                table.remove(mountpoint)
                throw MountServer.Failure("\(mountpoint) is not mounted")
            default:
                throw SystemError("umount", mountpoint, errno: error)
            }
        }
        if let record, MountTable.processAlive(record.pid) {
            kill(record.pid, SIGTERM)
            for _ in 0..<200 where MountTable.processAlive(record.pid) { try await Task.sleep(nanoseconds: 10_000_000) }
        }
        table.remove(mountpoint)
    }
}
