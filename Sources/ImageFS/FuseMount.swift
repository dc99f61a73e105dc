import CFuse
#if canImport(Glibc)
import Glibc
#endif

/// A mount made for servers to serve: the kernel mount and its /dev/fuse descriptor, held by
/// a keeper (`imgvol __keep`) for as long as the mount lives. The kernel keeps a FUSE
/// connection while any process holds its descriptor, so a server that dies (or is replaced)
/// loses nothing: the next one is handed the same descriptor. This process never reads it.
public final class FuseMount {
    private let session: OpaquePointer
    /// The connection's descriptor; stays open for this process's life.
    public let fd: Int32
    public let mountpoint: String

    /// The mount options of every imgvol mount.
    public static func options(source: String, allowOther: Bool) -> String {
        let safeSource = source.replacingOccurrences(of: ",", with: "_")
        var options = "ro,nosuid,nodev,default_permissions,fsname=\(safeSource),subtype=imgvol,max_read=1048576"
        if allowOther { options += ",allow_other" }
        return options
    }

    public init(mountpoint: String, source: String, allowOther: Bool = true) throws(FuseSession.Failure) {
        self.mountpoint = mountpoint
        let session = Self.newSession(options: Self.options(source: source, allowOther: allowOther), ops: fuse_lowlevel_ops(), userdata: nil)
        guard let session else { throw FuseSession.Failure(message: "libfuse could not create a session (see the messages above)") }
        guard fuse_session_mount(session, mountpoint) == 0 else {
            fuse_session_destroy(session)
            throw FuseSession.Failure(message: "mounting at \(mountpoint) failed; is /dev/fuse available (modprobe fuse) and are you root or is user_allow_other set in /etc/fuse.conf?")
        }
        self.session = session
        self.fd = fuse_session_fd(session)
    }

    /// A libfuse session with `options` (as `-o`); libfuse copies `ops`.
    static func newSession(options: String, ops: fuse_lowlevel_ops, userdata: UnsafeMutableRawPointer?) -> OpaquePointer? {
        var table = ops
        let arguments = ["imgvol", "-o", options]
        var cStrings = arguments.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        return cStrings.withUnsafeMutableBufferPointer { argv in
            var args = fuse_args(argc: Int32(argv.count), argv: argv.baseAddress, allocated: 0)
            defer { fuse_opt_free_args(&args) }
            return fuse_session_new(&args, &table, MemoryLayout<fuse_lowlevel_ops>.size, userdata)
        }
    }

    /// Whether the kernel still has the connection behind `fd`: an unmount or an abort ends
    /// it, and the descriptor then polls as an error.
    public static func isConnected(fd: Int32) -> Bool {
        var entry = pollfd(fd: fd, events: 0, revents: 0)
        while poll(&entry, 1, 0) < 0 {
            if errno != EINTR { return false }
        }
        return entry.revents & Int16(POLLERR) == 0
    }

    /// Detaches the mount (a first server that never served).
    public func detach() { umount2(mountpoint, Int32(MNT_DETACH)) }
}
