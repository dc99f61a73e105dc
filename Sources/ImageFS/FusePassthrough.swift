import CFuseProtocol
import CLinux
import Logging
import Synchronization

/// Hands the kernel the store file that holds a file's bytes, so that reads of an open file go
/// from the kernel straight to that file (FUSE passthrough, Linux 6.9+): its page cache, its
/// read-ahead and its large folios, as fast as a native read. FUSE's own page cache works in
/// 4 KiB pages and made a warm read of a big file 2.2× slower than ext4.
///
/// Only files whose bytes are a whole store file qualify (the offset in the backing file is the
/// offset in the file). Registering needs CAP_SYS_ADMIN; without it, or on a kernel without
/// passthrough, opens are served as before, by the server.
final class FusePassthrough: Sendable {
    private let sessionFD = Atomic<Int32>(-1)
    /// Backing id per store file descriptor; a failed registration turns passthrough off for
    /// files not registered yet. The kernel wants every open of an inode to pass through to
    /// the same backing file, and keeps its own reference to it: one registration per file
    /// for the mount's life.
    private struct Registrations {
        var ids: [Int32: Int32] = [:]
        var failed = false
    }
    private let registrations = Mutex(Registrations())
    private let logger: Logger?

    init(logger: Logger?) { self.logger = logger }

    /// The session's /dev/fuse descriptor, once mounted.
    func attach(sessionFD fd: Int32) { sessionFD.store(fd, ordering: .releasing) }

    /// The backing id for `fd`, registering it on first use; nil when passthrough is off.
    func backingID(for fd: Int32) -> Int32? {
        guard imgvol_fuse_passthrough_accepted() != 0 else { return nil }
        let session = sessionFD.load(ordering: .acquiring)
        guard session >= 0 else { return nil }
        return registrations.withLock { r -> Int32? in
            // A file registered before stays passed through: the kernel fails an open that
            // does not pass through an inode another open already does.
            if let id = r.ids[fd] { return id }
            guard !r.failed else { return nil }
            let id = imgvol_fuse_backing_open(session, fd)
            guard id > 0 else {
                r.failed = true
                logger?.info("FUSE passthrough is off: registering a backing file failed (errno \(-id)); the server serves reads")
                return nil
            }
            if r.ids.isEmpty { logger?.notice("FUSE passthrough on: reads of whole store files go straight to them") }
            r.ids[fd] = id
            return id
        }
    }
}
