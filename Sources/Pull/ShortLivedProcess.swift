import Synchronization

/// A command that exits as soon as its work is done need not free what it built: the kernel
/// takes the whole address space back at once, where freeing a many-file image's tree node by
/// node would be the last, single-threaded step of every `pull`.
///
/// Off unless a command turns it on (`pull`, `unpack`); servers (mounts, the CSI and volume
/// plugins) pull many images in one process and must free each one.
public enum ShortLivedProcess {
    private static let enabled = Atomic<Bool>(false)
    private static let kept = Mutex<[any Sendable]>([])

    /// Called first thing by a command that exits when its work is done.
    public static func enable() { enabled.store(true, ordering: .relaxed) }

    /// Keeps `value` alive until the process exits when enabled; otherwise lets it go now.
    public static func keepUntilExit(_ value: any Sendable) {
        guard enabled.load(ordering: .relaxed) else { return }
        kept.withLock { $0.append(value) }
    }
}
