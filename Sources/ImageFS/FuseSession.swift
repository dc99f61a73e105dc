import CFuse
import CFuseProtocol
import CLinux
import Dispatch
import FileIO
#if canImport(Glibc)
import Glibc
#endif

/// One FUSE session: owns the `fuse_session` and keeps the filesystem alive while the kernel
/// may call into it. Either it mounts (a server in the foreground), or it serves a mount made
/// by a keeper (`FuseMount`), whose /dev/fuse descriptor it was handed; then it may be taking
/// over from a server that died.
public final class FuseSession {
    public struct Failure: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    private let session: OpaquePointer
    private let filesystem: FuseFilesystem
    public let mountpoint: String
    private var mounted = false

    /// Mounts at `mountpoint`; `source` shows in /proc/mounts as the mount's source
    /// (`imgvol:REFERENCE`).
    public convenience init(filesystem: FuseFilesystem, mountpoint: String, source: String, allowOther: Bool = true) throws(Failure) {
        try self.init(filesystem: filesystem, mountpoint: mountpoint, options: FuseMount.options(source: source, allowOther: allowOther))
        imgvol_fuse_passthrough_want(filesystem.passthrough == nil ? 0 : 1)
        guard fuse_session_mount(session, mountpoint) == 0 else {
            throw Failure(message: "mounting at \(mountpoint) failed; is /dev/fuse available (modprobe fuse) and are you root or is user_allow_other set in /etc/fuse.conf?")
        }
        mounted = true
        attach(fuse_session_fd(session))
    }

    /// Serves the mount whose /dev/fuse descriptor is `fd` (this session closes it when
    /// destroyed). With `filesystem.restored`, the session is taken over: `takeOver()` before
    /// `serve()`.
    public convenience init(filesystem: FuseFilesystem, adopting fd: Int32, mountpoint: String) throws(Failure) {
        // Options that matter beyond the mount: libfuse checks max_read against INIT.
        try self.init(filesystem: filesystem, mountpoint: mountpoint, options: "ro,max_read=1048576")
        imgvol_fuse_passthrough_want(filesystem.passthrough == nil ? 0 : 1)
        attach(fd)
    }

    private init(filesystem: FuseFilesystem, mountpoint: String, options: String) throws(Failure) {
        self.filesystem = filesystem
        self.mountpoint = mountpoint
        let session = FuseMount.newSession(options: options, ops: FuseOperations.table(),
                                           userdata: Unmanaged.passUnretained(filesystem).toOpaque())
        guard let session else { throw Failure(message: "libfuse could not create a session (see the messages above)") }
        self.session = session
    }

    /// The descriptor, with I/O functions that add passthrough and takeover to libfuse's protocol.
    private func attach(_ fd: Int32) {
        var io = fuse_custom_io(writev: imgvol_fuse_io_writev, read: imgvol_fuse_io_read,
                                splice_receive: nil, splice_send: imgvol_fuse_io_splice_send)
        if fuse_session_custom_io(session, &io, fd) == 0 {
            filesystem.passthrough?.attach(sessionFD: fd)
        }
    }

    /// What taking over found: whether the kernel was asked to send again the requests the
    /// dead server had read and not answered.
    public enum Takeover: Sendable {
        case resent
        /// The kernel predates FUSE_NOTIFY_RESEND (Linux < 6.9): requests the dead server
        /// had read stay unanswered; the calls that made them wait (killable) for good.
        case resendUnsupported
        case resendFailed(errno: Int32)
    }

    /// Takes the session over: replays the INIT the first server answered (libfuse refuses
    /// everything before INIT; the kernel sends it once per mount, and the reply is dropped),
    /// which also announces the mount (`onInit`), then asks the kernel to resend.
    public func takeOver() throws(Failure) -> Takeover {
        guard let state = filesystem.restored, !state.initRequest.isEmpty else {
            throw Failure(message: "taking over the session at \(mountpoint): no saved INIT request")
        }
        imgvol_fuse_takeover(state.passthrough ? 1 : 0)
        var request = state.initRequest
        request.withUnsafeMutableBytes { imgvol_process_request(session, $0.baseAddress, $0.count) }
        let supported = state.initRequest.withUnsafeBytes { imgvol_fuse_init_has_resend($0.baseAddress, $0.count) } != 0
        guard supported else { return .resendUnsupported }
        let result = imgvol_fuse_notify_resend(fuse_session_fd(session))
        return result == 0 ? .resent : .resendFailed(errno: -result)
    }

    /// Serves until unmounted or signalled. SIGINT, SIGTERM and SIGHUP detach the mount, which
    /// makes the kernel end every worker's read: libfuse's own handlers only set a flag that
    /// the multi-threaded loop may not see when the signal lands on another thread (a Swift
    /// process has many).
    public func serve(threads: UInt32 = 16) -> Int32 {
        let sessionAddress = UInt(bitPattern: session)
        let mountpoint = self.mountpoint
        let sources = [SIGINT, SIGTERM, SIGHUP].map { number -> any DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                if let session = OpaquePointer(bitPattern: sessionAddress) { fuse_session_exit(session) }
                umount2(mountpoint, Int32(MNT_DETACH))
            }
            source.resume()
            return source
        }
        defer { sources.forEach { $0.cancel() } }
        return imgvol_session_loop_mt(session, 0, threads)
    }

    /// Drops the kernel's cached pages of every file stored in layer `number`, so that reads
    /// come back to the server (which refuses them once that layer failed verification).
    public func invalidate(layer number: Int32) {
        for (index, node) in filesystem.tree.inodes.enumerated() where node.kind == .regular && node.layer == number {
            _ = fuse_lowlevel_notify_inval_inode(session, filesystem.ino(UInt32(index)), 0, 0)
        }
    }

    /// Whether the kernel still has the connection (false once unmounted).
    public var isConnected: Bool { FuseMount.isConnected(fd: fuse_session_fd(session)) }

    public func unmount() {
        if mounted { fuse_session_unmount(session); mounted = false }
    }

    deinit {
        unmount()
        fuse_session_destroy(session)
        withExtendedLifetime(filesystem) {}
    }
}
