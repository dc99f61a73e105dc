import CFuse
import CFuseProtocol
import CLinux
import Dispatch
import FileIO
#if canImport(Glibc)
import Glibc
#endif

/// One mounted FUSE session: owns the `fuse_session` and keeps the filesystem alive while the
/// kernel may call into it.
public final class FuseSession {
    public struct Failure: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    private let session: OpaquePointer
    private let filesystem: FuseFilesystem
    private let ops: fuse_lowlevel_ops
    public let mountpoint: String
    private var mounted = false

    /// `source` shows in /proc/mounts as the mount's source (`imgvol:REFERENCE`).
    public init(filesystem: FuseFilesystem, mountpoint: String, source: String, allowOther: Bool = true) throws(Failure) {
        self.filesystem = filesystem
        self.mountpoint = mountpoint
        self.ops = FuseOperations.table()
        let safeSource = source.replacingOccurrences(of: ",", with: "_")
        var options = "ro,nosuid,nodev,default_permissions,fsname=\(safeSource),subtype=imgvol,max_read=1048576"
        if allowOther { options += ",allow_other" }
        let arguments = ["imgvol", "-o", options]
        var cStrings = arguments.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        var table = ops
        let session: OpaquePointer? = cStrings.withUnsafeMutableBufferPointer { argv in
            var args = fuse_args(argc: Int32(argv.count), argv: argv.baseAddress, allocated: 0)
            defer { fuse_opt_free_args(&args) }
            let data = Unmanaged.passUnretained(filesystem).toOpaque()
            // libfuse copies the table; it needs to live only for this call.
            return fuse_session_new(&args, &table, MemoryLayout<fuse_lowlevel_ops>.size, data)
        }
        guard let session else { throw Failure(message: "libfuse could not create a session (see the messages above)") }
        self.session = session
        imgvol_fuse_passthrough_want(filesystem.passthrough == nil ? 0 : 1)
        guard fuse_session_mount(session, mountpoint) == 0 else {
            fuse_session_destroy(session)
            throw Failure(message: "mounting at \(mountpoint) failed; is /dev/fuse available (modprobe fuse) and are you root or is user_allow_other set in /etc/fuse.conf?")
        }
        mounted = true
        // The same descriptor, with I/O functions that add passthrough to libfuse's protocol.
        let fd = fuse_session_fd(session)
        var io = fuse_custom_io(writev: imgvol_fuse_io_writev, read: imgvol_fuse_io_read,
                                splice_receive: nil, splice_send: imgvol_fuse_io_splice_send)
        if fuse_session_custom_io(session, &io, fd) == 0 {
            filesystem.passthrough?.attach(sessionFD: fd)
        }
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

    public func unmount() {
        if mounted { fuse_session_unmount(session); mounted = false }
    }

    deinit {
        unmount()
        fuse_session_destroy(session)
        withExtendedLifetime(filesystem) {}
    }
}
