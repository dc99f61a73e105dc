import CLinux
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// fs-verity, where the store's file system has it (ext4 or f2fs with the feature on, Linux
/// 5.4+): once on for a stored file, the kernel checks every page read from it against a
/// Merkle tree made from the verified bytes, so even passthrough reads cannot return damage.
/// Detected by trying: where a file system refuses it, no later file is asked.
public enum FSVerity {
    private static let unsupported = Atomic<Bool>(false)

    /// Turns fs-verity on for a file just committed (true when on). Best effort: without it,
    /// the mount's chunk checks protect reads instead.
    @discardableResult
    public static func enable(_ path: String) -> Bool {
        guard !unsupported.load(ordering: .relaxed) else { return false }
        guard let file = try? OpenFile.openRead(path) else { return false }
        if imgvol_enable_verity(file.fd) == 0 { return true }
        switch errno {
        case EEXIST: return true
        case EOPNOTSUPP, ENOTTY, EINVAL: unsupported.store(true, ordering: .relaxed)
        default: break
        }
        return false
    }

    public static func isOn(_ file: OpenFile) -> Bool { imgvol_has_verity(file.fd) == 1 }
}
