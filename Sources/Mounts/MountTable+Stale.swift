import FileIO
import OCI
import Store

/// What `prune` needs from the mount records: the images live mounts serve (kept, named or
/// not), and the records and logs of mounts that are gone (removed, so they do not pile up).
extension MountTable {
    public struct Sweep: Sendable {
        /// Images that live mounts serve.
        public var served: Set<Digest> = []
        /// Records and logs of ended mounts that were removed.
        public var removedFiles = 0
    }

    /// A log with no record is removed only once it is this old: a server being started has
    /// its log before it writes its record.
    static let startingGrace = 600

    /// Fails, removing nothing, when a record cannot be read and some imgvol mount in the
    /// kernel has no readable record: that mount's image is unknown, and pruning could take it.
    public func sweep() throws -> Sweep {
        let mounted = Self.imgvolMountpoints()
        let names: [String]
        do { names = try FileSystem.names(in: store.mountsDir) } catch {
            throw MountServer.Failure("cannot list the mount records in \(store.mountsDir): \(error); nothing was pruned")
        }
        var sweep = Sweep()
        var recorded = Set<String>()
        var damaged: [String] = []
        var ended: [String] = []
        for file in recordFiles(names) {
            guard let record = file.record else { damaged.append(file.key); continue }
            if Self.isLive(record, mounted: mounted) {
                sweep.served.insert(record.digest)
                recorded.insert(record.mountpoint)
            } else {
                ended.append(file.key)
            }
        }
        let unknown = mounted.subtracting(recorded)
        if let key = damaged.first, let mountpoint = unknown.sorted().first {
            throw MountServer.Failure("the mount record \(store.layout.mountRecord(key)) is damaged and \(mountpoint) is served by imgvol without a readable record, "
                + "so which image it serves is unknown; nothing was pruned. Unmount \(mountpoint) (imgvol unmount) and prune again")
        }
        for key in damaged + ended {
            sweep.removedFiles += remove(store.layout.mountRecord(key)) + remove(store.layout.mountLog(key))
            try? FileSystem.remove(store.layout.mountSession(key))
        }
        for name in names where name.hasSuffix(".log") {
            let key = String(name.dropLast(4))
            let path = store.layout.mountLog(key)
            if !FileSystem.exists(store.layout.mountRecord(key)), FileSystem.ageInSeconds(path) > Self.startingGrace {
                sweep.removedFiles += remove(path)
            }
        }
        return sweep
    }

    private func remove(_ path: String) -> Int {
        (try? FileSystem.remove(path)) == nil ? 0 : 1
    }
}
