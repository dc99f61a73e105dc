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
///
/// Registrations belong to the FUSE connection, not to this process: a server that takes the
/// session over starts from the state the one before it persisted (`FuseSessionState`), and
/// every new registration is persisted before an open reply uses it.
final class FusePassthrough: Sendable {
    private let sessionFD = Atomic<Int32>(-1)
    /// Backing id per store file; a failed registration turns passthrough off for files not
    /// registered yet. The kernel keeps its own reference to each backing file: one
    /// registration per file for the mount's life.
    private let state: Mutex<FuseSessionState?>
    private let persist: @Sendable (FuseSessionState) -> Void
    private let logger: Logger?

    init(logger: Logger?, restored: FuseSessionState?, persist: @escaping @Sendable (FuseSessionState) -> Void) {
        self.logger = logger
        self.state = Mutex(restored)
        self.persist = persist
    }

    /// The session's /dev/fuse descriptor, once it serves.
    func attach(sessionFD fd: Int32) { sessionFD.store(fd, ordering: .releasing) }

    /// Called once INIT is answered by this server (a first server): the state starts.
    func started(_ initial: FuseSessionState) {
        state.withLock { current in
            if current == nil { current = initial }
            if let current { persist(current) }
        }
    }

    /// The state as it stands (nil before INIT).
    var current: FuseSessionState? { state.withLock { $0 } }

    /// Whether `file` was registered already (by this server or one before it): such a file
    /// was checked whole when it first passed through.
    func isRegistered(_ file: BackingKey) -> Bool {
        state.withLock { $0?.backings.contains { $0.file == file } ?? false }
    }

    /// The backing id for `file` (open as `fd`), registering it on first use; nil when
    /// passthrough is off.
    func backingID(for file: BackingKey, fd: Int32) -> Int32? {
        guard imgvol_fuse_passthrough_accepted() != 0 else { return nil }
        let session = sessionFD.load(ordering: .acquiring)
        guard session >= 0 else { return nil }
        return state.withLock { s -> Int32? in
            guard var current = s else { return nil }
            // A file registered before stays passed through: the kernel fails an open that
            // does not pass through an inode another open already does.
            if let known = current.backings.first(where: { $0.file == file }) { return known.id }
            guard !current.backingFailed else { return nil }
            let id = imgvol_fuse_backing_open(session, fd)
            guard id > 0 else {
                current.backingFailed = true
                s = current
                persist(current)
                logger?.info("FUSE passthrough is off: registering a backing file failed (errno \(-id)); the server serves reads")
                return nil
            }
            if current.backings.isEmpty { logger?.notice("FUSE passthrough on: reads of whole store files go straight to them") }
            current.backings.append(.init(file: file, id: id))
            s = current
            // Before any open reply names the id: a successor must know it.
            persist(current)
            return id
        }
    }
}
