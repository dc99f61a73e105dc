import FileIO
import OCI

/// Garbage collection: everything not reachable from a reference (or from `keep`, the images
/// live mounts serve) is removed, including stale partial downloads nobody is writing.
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
        let live = Set(references().values).union(keep)

        var liveBlobs = Set<Digest>()
        var liveLayers = Set<Digest>()
        for digest in listImages() {
            if live.contains(digest), let record = try? readImage(digest) {
                liveBlobs.formUnion(record.blobs)
                liveLayers.formUnion(record.tarLayers.map(\.diffID))
            } else {
                report.freedBytes += remove(imagePath(digest)) + remove(treePath(digest))
                report.removedImages.append(digest)
            }
        }
        for name in FileSystem.listDirectory(blobsDir) {
            guard let digest = try? Digest(hex: name), !liveBlobs.contains(digest) else { continue }
            report.freedBytes += remove("\(blobsDir)/\(name)")
        }
        var seenLayers = Set<Digest>()
        for name in FileSystem.listDirectory(layersDir) {
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
        return report
    }

    private func remove(_ path: String) -> Int64 {
        let size = FileSystem.diskUsage(path)
        do { try FileSystem.removeTree(path); return size } catch { return 0 }
    }
}
