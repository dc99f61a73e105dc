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
    ///
    /// What is started is the mount's keeper (`MountKeeper`): it mounts, holds the mount's
    /// /dev/fuse descriptor and keeps a server on it, so a server that dies is replaced
    /// without the mount's readers noticing.
    public func launch(reference: Reference, digest: Digest?, mountpoint: String, subpath: String?,
                       lazy: LazySource? = nil) async throws -> MountRecord {
        let table = MountTable(store: store)
        var server = ["--root", store.root, "--log-level", logLevel, "--reference", reference.description, "--mountpoint", mountpoint]
        if let subpath { server += ["--subpath", subpath] }
        if let lazy {
            server += ["--lazy"] + lazy.pullArguments
        } else if let digest {
            server += ["--digest", digest.description]
        }
        let arguments = ["__keep", "--log-level", logLevel, "--mountpoint", mountpoint, "--source", "imgvol:\(reference)"]
            + (lazy?.credentials != nil ? ["--creds-from-stdin"] : []) + ["--"] + server
        let keeper = try ServerProcess.start(executable: executable, arguments: arguments, logPath: table.logPath(mountpoint),
                                             input: lazy?.credentials)
        // A lazy server may first pull compressed layers in full.
        try await keeper.waitUntilReady(within: lazy == nil ? .seconds(60) : .seconds(3600),
                                        what: "mounting \(reference) at \(mountpoint)")
        guard let record = table.record(for: mountpoint), record.keeper == keeper.process.processIdentifier else {
            throw MountServer.Failure("mounting \(reference) at \(mountpoint): the server said it serves but left no mount record; see \(table.logPath(mountpoint))")
        }
        return record
    }

    /// Unmounts (lazily with `force`), then stops the server if it is still there. Works when
    /// the server has died and the mount answers ENOTCONN.
    public func unmount(_ mountpoint: String, force: Bool) async throws {
        let table = MountTable(store: store)
        let record = table.record(for: mountpoint)
        if let foreign = MountTable.kernelMounts().last(where: { $0.mountpoint == mountpoint }), foreign.fstype != "fuse.imgvol" {
            throw MountServer.Failure("\(mountpoint) is not an imgvol mount (it is \(foreign.fstype) from \(foreign.source)); use umount for it")
        }
        if let error = failure(of: { umount2(mountpoint, 0) }) {
            switch error {
            case EBUSY where force:
                if let error = failure(of: { umount2(mountpoint, Int32(MNT_DETACH)) }) { throw SystemError("umount", mountpoint, errno: error) }
            case EBUSY:
                throw MountServer.Failure("\(mountpoint) is busy (a process uses it); stop it or pass --force for a lazy unmount")
            case EINVAL where !MountTable.isMountpoint(mountpoint), ENOENT:
                table.remove(mountpoint)
                throw MountServer.Failure("\(mountpoint) is not mounted")
            default:
                throw SystemError("umount", mountpoint, errno: error)
            }
        }
        // The keeper stops its server and ends; a server without one (in the foreground, or
        // whose keeper was killed) is stopped itself.
        if let record {
            for pid in [record.keeper, record.pid].compactMap({ $0 }) where MountTable.processAlive(pid) {
                kill(pid, SIGTERM)
                _ = await ProcessExit.wait(pid, atMost: .seconds(2))
            }
        }
        table.forget(mountpoint)
    }
}
