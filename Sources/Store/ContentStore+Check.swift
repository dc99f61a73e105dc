import FileIO
import Layers
import OCI
#if canImport(Glibc)
import Glibc
#endif

/// `imgvol check`: every stored byte against the digest that names it. Blobs hash to their
/// name; a layer's tar, read with its big files put back where its holes are, hashes to its
/// diff_id; an index decodes. Reads everything, so it is a command of its own, not a step of
/// every pull.
extension ContentStore {
    public struct Damage: Codable, Sendable, Equatable {
        public enum Part: String, Codable, Sendable {
            case record, blob, layer, index
        }
        public let part: Part
        /// The blob's digest, the layer's diff_id, or the record's image digest.
        public let digest: Digest
        public let problem: String
        /// What `--repair` moves aside.
        public let paths: [String]
        /// The images that need it.
        public var images: [Digest]
    }

    public struct CheckReport: Codable, Sendable {
        public var images = 0
        public var blobs = 0
        public var layers = 0
        public var damage: [Damage] = []
    }

    /// Checks `images` (all records when nil). Damage to one image's part is listed once, with
    /// every image that needs it.
    public func check(images: [Digest]? = nil) throws(StoreError) -> CheckReport {
        var report = CheckReport()
        var checkedBlobs: [Digest: Damage?] = [:]
        var checkedLayers: [Digest: [Damage]] = [:]
        let digests: [Digest]
        if let images { digests = images } else { digests = try listImages() }
        for digest in digests {
            report.images += 1
            let record: ImageRecord
            do { record = try readImage(digest) } catch {
                report.damage.append(Damage(part: .record, digest: digest, problem: error.description,
                                            paths: [imagePath(digest)], images: [digest]))
                continue
            }
            for blob in record.blobs {
                if checkedBlobs[blob] == nil {
                    report.blobs += 1
                    checkedBlobs[blob] = .some(checkBlob(blob))
                }
                if case .some(.some(var damage)) = checkedBlobs[blob] {
                    damage.images = [digest]
                    report.add(damage)
                }
            }
            for layer in record.tarLayers {
                if checkedLayers[layer.diffID] == nil {
                    report.layers += 1
                    checkedLayers[layer.diffID] = checkLayer(layer.diffID)
                }
                for var damage in checkedLayers[layer.diffID] ?? [] {
                    damage.images = [digest]
                    report.add(damage)
                }
            }
        }
        return report
    }

    /// Moves a damaged part aside (`damaged/`), so the next pull fetches it again.
    public func setAside(_ damage: Damage) throws(StoreError) {
        try setAside(damage.paths)
    }

    private func checkBlob(_ digest: Digest) -> Damage? {
        let path = blobPath(digest)
        do {
            let actual = try Self.hash([(path, 0, nil)])
            guard actual == digest else {
                return Damage(part: .blob, digest: digest, problem: "hashes to \(actual)", paths: [path], images: [])
            }
            return nil
        } catch {
            return Damage(part: .blob, digest: digest, problem: "cannot be read (\(error))", paths: [path], images: [])
        }
    }

    private func checkLayer(_ diffID: Digest) -> [Damage] {
        let paths = [layerIndexPath(diffID), layerTarPath(diffID), layerFiles(diffID).directory]
        let index: LayerIndex
        do { index = try readLayerIndex(diffID) } catch {
            return [Damage(part: .index, digest: diffID, problem: error.description, paths: paths, images: [])]
        }
        // The tar with a hole where each file stored apart was: read that file there instead.
        let tar = layerTarPath(diffID)
        let apart = index.entries.filter(\.storedApart).sorted { $0.dataOffset < $1.dataOffset }
        var pieces: [(String, Int64, Int64?)] = []
        var position: Int64 = 0
        for entry in apart {
            pieces.append((tar, position, entry.dataOffset - position))
            pieces.append((layerFiles(diffID).path(offset: entry.dataOffset), 0, entry.size))
            position = entry.dataOffset + entry.size
        }
        pieces.append((tar, position, nil))
        do {
            let actual = try Self.hash(pieces)
            guard actual == diffID else {
                return [Damage(part: .layer, digest: diffID, problem: "its tar (with its files stored apart) hashes to \(actual)",
                               paths: paths, images: [])]
            }
            return []
        } catch {
            return [Damage(part: .layer, digest: diffID, problem: "cannot be read (\(error))", paths: paths, images: [])]
        }
    }

    /// sha256 of the concatenation of file ranges (path, start, length; nil: to the end). A
    /// range that ends early is an error: a truncated piece must not pass as a shorter one.
    static func hash(_ pieces: [(String, Int64, Int64?)]) throws(SystemError) -> Digest {
        var hasher = DigestHasher()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        for (path, start, length) in pieces {
            let file = try OpenFile.openRead(path)
            defer { file.close() }
            let end: Int64
            if let length { end = start + length } else { end = try file.size() }
            var offset = start
            while offset < end {
                let want = Int(min(Int64(buffer.count), end - offset))
                let n = try file.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]), at: offset)
                guard n > 0 else { throw SystemError("read", "\(path): ends at \(offset), expected \(end)", errno: EIO) }
                hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                offset += Int64(n)
            }
        }
        return hasher.finalize()
    }
}

extension ContentStore.CheckReport {
    mutating func add(_ damage: ContentStore.Damage) {
        if let i = self.damage.firstIndex(where: { $0.part == damage.part && $0.digest == damage.digest }) {
            self.damage[i].images += damage.images.filter { !self.damage[i].images.contains($0) }
        } else {
            self.damage.append(damage)
        }
    }
}
