import FileIO
import OCI

/// Garbage collection: everything not reachable from a reference (or from `keep`, the images
/// live mounts serve) is removed, including stale partial downloads nobody is writing.
///
/// Liveness is read from the names and the image records; when either cannot be read, GC
/// removes nothing: "no names" from a damaged `refs.json` would otherwise mean "delete all".
extension ContentStore {
    public struct GCReport: Sendable {
        public var freedBytes: Int64 = 0
        public var removedImages: [Digest] = []
        public var removedLayers: [Digest] = []
    }

    public func collectGarbage(keep: Set<Digest> = []) async throws -> GCReport {
        let lock = try await gcLock(exclusive: true)
        defer { lock.release() }
        var report = GCReport()
        let live = Set(try references().values).union(keep)

        var liveBlobs = Set<Digest>()
        var liveLayers = Set<Digest>()
        var dead: [Digest] = []
        var damaged: [StoreError] = []
        for digest in try listImages() {
            guard live.contains(digest) else { dead.append(digest); continue }
            do {
                let record = try readImage(digest)
                liveBlobs.formUnion(record.blobs)
                liveLayers.formUnion(record.tarLayers.map(\.diffID))
            } catch {
                damaged.append(error)
            }
        }
        // A named image whose record cannot be read: which layers it needs is unknown.
        if let first = damaged.first {
            throw StoreError(.corrupt, "prune removed nothing: \(damaged.count) named image record(s) are damaged, "
                + "so what they need is unknown (first: \(first)); pull those images again or `imgvol rm` them, then prune")
        }
        for digest in dead {
            report.freedBytes += remove(imagePath(digest)) + remove(treePath(digest))
            report.removedImages.append(digest)
        }
        // A raw file's sums (`<hex>.sums`) go with it.
        for name in FileSystem.listDirectory(blobsDir) {
            let hex = name.hasSuffix(".sums") ? String(name.dropLast(5)) : name
            guard let digest = try? Digest(hex: hex), !liveBlobs.contains(digest) else { continue }
            report.freedBytes += remove("\(blobsDir)/\(name)")
        }
        var seenLayers = Set<Digest>()
        // Index first, files stored apart last: a removal cut short leaves a layer that is
        // absent (no index) and never a tar whose holes have lost their files. (Its sums go
        // after the tar: sums without a tar are rewritten by the next pull.)
        let rank = { (name: String) in name.hasSuffix(".idx") ? 0 : name.hasSuffix(".tar") ? 1 : 2 }
        for name in FileSystem.listDirectory(layersDir).sorted(by: { (rank($0), $0) < (rank($1), $1) }) {
            guard let dot = name.lastIndex(of: "."), let digest = try? Digest(hex: String(name[..<dot])),
                  !liveLayers.contains(digest) else { continue }
            report.freedBytes += remove("\(layersDir)/\(name)")
            if seenLayers.insert(digest).inserted { report.removedLayers.append(digest) }
        }
        // Pulls hold the GC lock shared, so no download is running now: partial downloads are
        // garbage. Atomic-write temp files (dot names) may belong to a concurrent `rm`; they
        // go only once they are old.
        for name in FileSystem.listDirectory(tmpDir) where !name.hasPrefix(".") || FileSystem.ageInSeconds("\(tmpDir)/\(name)") > 3600 {
            report.freedBytes += remove("\(tmpDir)/\(name)")
        }
        // Reports of damage to what is now gone.
        for name in FileSystem.listDirectory(layout.reportsDir) where name.hasSuffix(".json") {
            guard let digest = try? Digest(hex: String(name.dropLast(5))), !liveBlobs.contains(digest), !liveLayers.contains(digest) else { continue }
            report.freedBytes += remove("\(layout.reportsDir)/\(name)")
        }
        // Parts moved aside as damaged: kept for a look until the user prunes.
        for name in FileSystem.listDirectory(layout.damagedDir) {
            report.freedBytes += remove("\(layout.damagedDir)/\(name)")
        }
        // Lock files nobody holds (left by older versions, or by a killed process): taking
        // one and releasing it unlinks it.
        for name in FileSystem.listDirectory(locksDir) where name.hasSuffix(".lock") && name != "gc.lock" {
            (try? tryLock(String(name.dropLast(5))))??.release()
        }
        return report
    }

    private func remove(_ path: String) -> Int64 {
        let size = FileSystem.diskUsage(path)
        do { try FileSystem.removeTree(path); return size } catch { return 0 }
    }
}
