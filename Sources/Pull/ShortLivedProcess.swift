import Synchronization

/// A command that exits as soon as its work is done need not free what it built: the kernel
/// takes the whole address space back at once. Freeing a 21,000-file image's tree node by
/// node took the last 10 ms of every `pull`, on one core.
///
/// Off unless a command turns it on (`pull`, `unpack`); servers (mounts, the CSI and volume
/// plugins) pull many images in one process and must free each one.
public enum ShortLivedProcess {
    private static let enabled = Atomic<Bool>(false)
    private static let kept = Mutex<[Kept]>([])

    /// Called first thing by a command that exits when its work is done.
    public static func enable() { enabled.store(true, ordering: .relaxed) }

    /// Keeps `value` alive until the process exits when enabled; otherwise lets it go now.
    public static func keepUntilExit(_ value: Any) {
        guard enabled.load(ordering: .relaxed) else { return }
        let box = Kept(value: value)
        kept.withLock { $0.append(box) }
    }

    /// Only ever appended to and never read: no value is touched from another thread.
    private struct Kept: @unchecked Sendable {
        let value: Any
    }
}
