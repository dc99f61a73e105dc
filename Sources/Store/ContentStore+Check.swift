import FileIO
import Integrity
import Layers
import OCI
#if canImport(Glibc)
import Glibc
#endif

/// `imgvol check`: every stored byte against the digest that names it. Blobs hash to their
/// name; a layer's tar, read with its big files put back where its holes are, hashes to its
/// diff_id; an index and a sums file decode (each with its own checksum) and the sums match
/// the bytes; damage a mount server reported is listed. Reads everything, so it is a command
/// of its own, not a step of every pull.
extension ContentStore {
    public struct Damage: Codable, Sendable, Equatable {
        public enum Part: String, Codable, Sendable {
            case record, blob, layer, index
            /// Chunk sums (a layer's, a raw file's) missing, damaged, or not matching bytes
            /// that verify: repaired in place, from those bytes.
            case layerSums = "layer-sums"
            case fileSums = "file-sums"
            /// An image's cached tree whose seal does not match: derived, built again by the
            /// next mount.
            case tree
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
            if let damage = checkTree(digest) { report.add(damage) }
            let rawFiles = Set(record.layers.filter { $0.file != nil }.map(\.digest))
            for blob in record.blobs {
                if checkedBlobs[blob] == nil {
                    report.blobs += 1
                    checkedBlobs[blob] = .some(checkBlob(blob, withSums: rawFiles.contains(blob)))
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
        try addReports(to: &report, images: digests)
        return report
    }

    /// What mount servers found while serving the checked images' layers and files.
    private func addReports(to report: inout CheckReport, images: [Digest]) throws(StoreError) {
        let reports = try damageReports()
        guard !reports.isEmpty else { return }
        for image in images {
            guard let record = try? readImage(image) else { continue }
            for layer in record.layers {
                let name = layer.file == nil ? layer.diffID : layer.digest
                for found in reports where found.digest == name {
                    let paths = layer.file == nil
                        ? [layerIndexPath(name), layerSumsPath(name), layerTarPath(name), layerFiles(name).directory]
                        : [blobPath(name), blobSumsPath(name)]
                    report.add(Damage(part: layer.file == nil ? .layer : .blob, digest: name,
                                      problem: "a mount found \(found.path) damaged at \(found.foundAt): \(found.problem)",
                                      paths: paths, images: [image]))
                }
            }
        }
    }

    /// Repairs one damaged part: moves it aside (`damaged/`), so the next pull fetches it
    /// again; sums are recorded anew at once from the bytes, which verify. Clears what a mount
    /// reported about it. True when a pull must fetch it.
    public func repair(_ damage: Damage) throws(StoreError) -> Bool {
        try setAside(damage.paths)
        try clearReport(damage.digest)
        switch damage.part {
        case .layerSums:
            try recordLayerSums(damage.digest)
            return false
        case .fileSums:
            try recordBlobSums(damage.digest)
            return false
        case .tree:
            return false
        case .record, .blob, .layer, .index:
            return true
        }
    }

    /// A cached tree in the sealed format must match its seal (an older, unsealed one is
    /// read as it is).
    private func checkTree(_ image: Digest) -> Damage? {
        let path = treePath(image)
        guard FileSystem.exists(path) else { return nil }
        do {
            let bytes = try FileSystem.readFile(path)
            guard !bytes.starts(with: Array("IMGVOL-TREE-3\n".utf8)) || Sealed.open(bytes) != nil else {
                return Damage(part: .tree, digest: image, problem: "its cached tree (\(path)) does not match its checksum",
                              paths: [path], images: [image])
            }
            return nil
        } catch {
            return Damage(part: .tree, digest: image, problem: "its cached tree cannot be read (\(error))", paths: [path], images: [image])
        }
    }

    private func checkBlob(_ digest: Digest, withSums: Bool) -> Damage? {
        let path = blobPath(digest)
        do {
            let (actual, sums) = try measureBlob(digest)
            guard actual == digest else {
                return Damage(part: .blob, digest: digest, problem: "hashes to \(actual)", paths: [path, blobSumsPath(digest)], images: [])
            }
            guard withSums else { return nil }
            return sumsDamage(stored: { () throws(StoreError) in try readSums(at: blobSumsPath(digest), of: "file \(digest)") }, actual: StoredSums(data: sums),
                              part: .fileSums, digest: digest, path: blobSumsPath(digest))
        } catch {
            return Damage(part: .blob, digest: digest, problem: "cannot be read (\(error))", paths: [path, blobSumsPath(digest)], images: [])
        }
    }

    /// Sums that are missing, do not decode, or differ from bytes that verify.
    private func sumsDamage(stored: () throws(StoreError) -> StoredSums, actual: StoredSums, part: Damage.Part,
                            digest: Digest, path: String) -> Damage? {
        do {
            guard try stored() == actual else {
                return Damage(part: part, digest: digest, problem: "its chunk sums (\(path)) do not match its bytes, which verify",
                              paths: [path], images: [])
            }
            return nil
        } catch {
            return Damage(part: part, digest: digest, problem: error.description, paths: [path], images: [])
        }
    }


    private func checkLayer(_ diffID: Digest) -> [Damage] {
        let paths = [layerIndexPath(diffID), layerSumsPath(diffID), layerTarPath(diffID), layerFiles(diffID).directory]
        let index: LayerIndex
        do { index = try readLayerIndex(diffID) } catch {
            return [Damage(part: .index, digest: diffID, problem: error.description, paths: paths, images: [])]
        }
        do {
            let (actual, sums) = try measureLayer(diffID, index: index)
            guard actual == diffID else {
                return [Damage(part: .layer, digest: diffID, problem: "its tar (with its files stored apart) hashes to \(actual)",
                               paths: paths, images: [])]
            }
            let path = layerSumsPath(diffID)
            return sumsDamage(stored: { () throws(StoreError) in try readSums(at: path, of: "layer \(diffID)") }, actual: sums,
                              part: .layerSums, digest: diffID, path: path).map { [$0] } ?? []
        } catch {
            return [Damage(part: .layer, digest: diffID, problem: "cannot be read (\(error))", paths: paths, images: [])]
        }
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
