import Foundation
import Integrity
import Layers
import OCI
import Store
import Testing

@Suite("ContentStore")
struct ContentStoreTests {
    @Test func rootIsCreatedPrivate() async throws {
        try await withTempDir { dir in
            let root = dir + "/a/b/store"
            let store = try ContentStore(root: root + "/")
            #expect(store.root == root)
            #expect(modeOf(root) == 0o700)
            for sub in [store.blobsDir, store.layersDir, store.imagesDir, store.tmpDir, store.locksDir, store.mountsDir] {
                #expect(modeOf(sub) == 0o700, "\(sub)")
            }
            #expect(store.blobsDir == root + "/blobs/sha256")
            // Opening an existing store again is fine.
            _ = try ContentStore(root: root)
        }
    }

    @Test func rootThatIsAFileIsRefused() async throws {
        try await withTempDir { dir in
            try writeFile(bytes("x"), to: dir + "/file")
            do {
                _ = try ContentStore(root: dir + "/file")
                Issue.record("a file was accepted as a store root")
            } catch let error as StoreError {
                #expect(error.kind == .io)
            }
        }
    }

    @Test func writeBlobRejectsMismatchedContentAndLeavesNoFile() async throws {
        try await withStore { store in
            let claimed = Digest.of(bytes("the real thing"))
            do {
                try store.writeBlob(bytes("an impostor"), digest: claimed)
                Issue.record("mismatched content was stored")
            } catch let error as StoreError {
                #expect(error.kind == .digestMismatch)
                #expect(error.detail.contains(claimed.description))
            }
            #expect(!store.hasBlob(claimed))
            #expect(list(store.blobsDir) == [])
            #expect(list(store.tmpDir) == [])
        }
    }

    @Test func writeAndReadBlob() async throws {
        try await withStore { store in
            let content = bytes(#"{"schemaVersion":2}"#)
            let digest = Digest.of(content)
            try store.writeBlob(content, digest: digest)
            try store.writeBlob(content, digest: digest)  // idempotent
            #expect(store.hasBlob(digest))
            #expect(store.blobPath(digest) == store.blobsDir + "/" + digest.hex)
            #expect(modeOf(store.blobPath(digest)) == 0o600)
            #expect(try store.readBlob(digest) == content)
            #expect(list(store.tmpDir) == [])
        }
    }

    @Test func readBlobDetectsCorruptionOnDisk() async throws {
        try await withStore { store in
            let content = bytes("config bytes")
            let digest = Digest.of(content)
            try store.writeBlob(content, digest: digest)
            try writeFile(bytes("config bytez"), to: store.blobPath(digest))
            do {
                _ = try store.readBlob(digest)
                Issue.record("a corrupted blob was returned")
            } catch let error as StoreError {
                #expect(error.kind == .corrupt)
                #expect(error.detail.contains(digest.description))
            }
        }
    }

    /// `readBlob` tells the user to pull again after corruption; that pull's `writeBlob` of the
    /// good bytes must replace the damaged file, not keep it because the name exists.
    @Test func writeBlobRepairsACorruptedCopy() async throws {
        try await withStore { store in
            let content = bytes("good config")
            let digest = Digest.of(content)
            try store.writeBlob(content, digest: digest)
            try writeFile(bytes("bad config!"), to: store.blobPath(digest))
            try store.writeBlob(content, digest: digest)
            let reread = try? store.readBlob(digest)
            #expect(reread == content)
        }
    }

    @Test func readMissingBlob() async throws {
        try await withStore { store in
            do {
                _ = try store.readBlob(Digest.of(bytes("nothing")))
                Issue.record("read a missing blob")
            } catch let error as StoreError {
                #expect(error.kind == .notFound)
            }
        }
    }

    @Test func references() async throws {
        try await withStore { store in
            let alpine = try Reference("alpine")
            let busybox = try Reference("localhost:5000/busybox:1")
            let d1 = Digest.of(bytes("1")), d2 = Digest.of(bytes("2"))
            #expect(try store.references() == [:])
            #expect(try store.digest(for: alpine) == nil)

            try await store.setReference(alpine, to: d1)
            try await store.setReference(busybox, to: d2)
            #expect(try store.references() == ["docker.io/library/alpine:latest": d1, "localhost:5000/busybox:1": d2])
            #expect(try store.digest(for: try Reference("docker.io/library/alpine:latest")) == d1)

            try await store.setReference(alpine, to: d2)
            #expect(try store.digest(for: alpine) == d2)

            #expect(try await store.removeReference("docker.io/library/alpine:latest") == d2)
            #expect(try await store.removeReference("docker.io/library/alpine:latest") == nil)
            #expect(try store.references() == ["localhost:5000/busybox:1": d2])
            #expect(modeOf(store.root + "/refs.json") == 0o600)
            #expect(list(store.tmpDir) == [])
        }
    }

    /// refs.json is read-modify-written under a lock: concurrent updates must all survive.
    @Test func concurrentReferenceUpdatesAreNotLost() async throws {
        try await withStore { store in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<24 {
                    group.addTask {
                        try await store.setReference(try Reference("localhost:5000/img\(i):v"), to: Digest.of(bytes("\(i)")))
                    }
                }
                try await group.waitForAll()
            }
            let refs = try store.references()
            #expect(refs.count == 24)
            #expect(refs["localhost:5000/img7:v"] == Digest.of(bytes("7")))
        }
    }

    @Test func imageRecordRoundTrip() async throws {
        try await withStore { store in
            let record = ImageRecord(
                digest: Digest.of(bytes("m")), manifestMediaType: MediaType.ociManifest,
                indexDigest: Digest.of(bytes("i")), configDigest: Digest.of(bytes("c")),
                layers: [
                    .init(digest: Digest.of(bytes("l1.gz")), mediaType: MediaType.ociLayerGzip, size: 123, diffID: Digest.of(bytes("l1"))),
                    .init(digest: Digest.of(bytes("l2")), mediaType: MediaType.ociLayer, size: 456, diffID: Digest.of(bytes("l2"))),
                ],
                platform: "linux/arm64/v8", created: "2024-01-01T00:00:00Z", pulledAt: "2024-06-01T12:00:00Z")
            #expect(!store.hasImage(record.digest))
            try store.writeImage(record)
            #expect(store.hasImage(record.digest))
            #expect(try store.readImage(record.digest) == record)
            #expect(try store.listImages() == [record.digest])
            #expect(record.blobs == [Digest.of(bytes("m")), Digest.of(bytes("c")), Digest.of(bytes("i"))])

            var bare = record
            bare.digest = Digest.of(bytes("m2"))
            bare.indexDigest = nil
            bare.platform = nil
            bare.created = nil
            try store.writeImage(bare)
            #expect(try store.readImage(bare.digest) == bare)
            #expect(try store.listImages() == [record.digest, bare.digest].sorted())

            // A record that still parses but lost a digit of a size is refused by its checksum.
            let path = store.imagesDir + "/\(record.digest.hex).json"
            let text = String(decoding: FileManager.default.contents(atPath: path) ?? Data(), as: UTF8.self)
            #expect(text.contains("\"size\" : 456"))
            try writeFile(bytes(text.replacingOccurrences(of: "\"size\" : 456", with: "\"size\" : 45")), to: path)
            do { _ = try store.readImage(record.digest); Issue.record("read a record whose size changed") } catch let error as StoreError {
                #expect(error.kind == .corrupt && error.detail.contains("checksum"))
            }
        }
    }

    @Test func damagedOrMissingImageRecord() async throws {
        try await withStore { store in
            let digest = Digest.of(bytes("x"))
            do { _ = try store.readImage(digest); Issue.record("read a missing image") } catch let error as StoreError { #expect(error.kind == .notFound) }
            try writeFile(bytes("{not json"), to: store.imagesDir + "/\(digest.hex).json")
            do { _ = try store.readImage(digest); Issue.record("read a damaged image") } catch let error as StoreError { #expect(error.kind == .corrupt) }
            // Names that are not digests are not images.
            try writeFile(bytes("{}"), to: store.imagesDir + "/notadigest.json")
            try writeFile(bytes("{}"), to: store.imagesDir + "/\(digest.hex).txt")
            #expect(try store.listImages() == [digest])
        }
    }

    @Test func layerTarAndIndex() async throws {
        try await withStore { store in
            let tar = bytes("pretend tar")
            let diffID = Digest.of(tar)
            let tmp = store.tmpDir + "/x.untar"
            try writeFile(tar, to: tmp)
            #expect(!store.hasLayer(diffID))
            try store.commitLayerTar(from: tmp, diffID: diffID, sums: sums(of: tar))
            #expect(store.hasLayerTar(diffID))
            #expect(!store.hasLayer(diffID), "a layer without its index is not complete")
            #expect(!exists(tmp))

            let index = LayerIndex(entries: [LayerEntry(path: "a", kind: .regular, size: 4, dataOffset: 512)])
            try store.commitLayerIndex(index, diffID: diffID)
            #expect(store.hasLayer(diffID))
            #expect(try store.readLayerIndex(diffID) == index)
            #expect(store.layerTarPath(diffID) == store.layersDir + "/\(diffID.hex).tar")

            try writeFile(bytes("IMGVOL-LAYER-INDEX-1\ngarbage"), to: store.layerIndexPath(diffID))
            do { _ = try store.readLayerIndex(diffID); Issue.record("read a damaged index") } catch let error as StoreError { #expect(error.kind == .corrupt) }
            do { _ = try store.readLayerIndex(Digest.of(bytes("none"))); Issue.record("read a missing index") } catch let error as StoreError { #expect(error.kind == .notFound) }
        }
    }
}

@Suite("ContentStore garbage collection")
struct GarbageCollectionTests {
    struct Image {
        var record: ImageRecord
        var manifest: [UInt8]
        var config: [UInt8]
    }

    /// Stores an image whose layers are `layerContents` (stored uncompressed, named by diff_id).
    static func storeImage(_ store: ContentStore, name: String, layerContents: [String], index: Bool = false,
                           config configText: String? = nil) throws -> ImageRecord {
        let manifest = bytes("manifest of \(name)"), config = bytes(configText ?? "config of \(name)")
        try store.writeBlob(manifest, digest: Digest.of(manifest))
        try store.writeBlob(config, digest: Digest.of(config))
        var indexDigest: Digest?
        if index {
            let indexBytes = bytes("index of \(name)")
            indexDigest = Digest.of(indexBytes)
            try store.writeBlob(indexBytes, digest: Digest.of(indexBytes))
        }
        var layers: [ImageRecord.Layer] = []
        for content in layerContents {
            let tar = bytes(String(repeating: content, count: 2000))
            let diffID = Digest.of(tar)
            if !store.hasLayer(diffID) {
                let tmp = store.tmpDir + "/\(diffID.hex).untar"
                try writeFile(tar, to: tmp)
                try store.commitLayerTar(from: tmp, diffID: diffID, sums: sums(of: tar))
                try store.commitLayerIndex(LayerIndex(entries: [LayerEntry(path: content, kind: .regular)]), diffID: diffID)
            }
            layers.append(.init(digest: diffID, mediaType: MediaType.ociLayer, size: Int64(tar.count), diffID: diffID))
        }
        let record = ImageRecord(digest: Digest.of(manifest), manifestMediaType: MediaType.ociManifest, indexDigest: indexDigest,
                                 configDigest: Digest.of(config), layers: layers, platform: "linux/amd64", created: nil, pulledAt: "now")
        try store.writeImage(record)
        return record
    }

    @Test func removesUnreferencedImageButKeepsSharedLayers() async throws {
        try await withStore { store in
            let a = try Self.storeImage(store, name: "a", layerContents: ["shared", "only-a"])
            let b = try Self.storeImage(store, name: "b", layerContents: ["shared", "only-b"], index: true)
            let refA = try Reference("a"), refB = try Reference("b")
            try await store.setReference(refA, to: a.digest)
            try await store.setReference(refB, to: b.digest)

            let nothing = try await store.collectGarbage()
            #expect(nothing.removedImages == [])
            #expect(nothing.removedLayers == [])
            #expect(nothing.freedBytes == 0)

            #expect(try await store.removeReference(refA.description) == a.digest)
            let report = try await store.collectGarbage()

            let shared = a.layers[0].diffID, onlyA = a.layers[1].diffID, onlyB = b.layers[1].diffID
            #expect(b.layers[0].diffID == shared)
            #expect(report.removedImages == [a.digest])
            #expect(report.removedLayers == [onlyA])
            #expect(report.freedBytes > 0)

            #expect(!store.hasImage(a.digest))
            #expect(!store.hasBlob(a.digest))
            #expect(!store.hasBlob(a.configDigest))
            #expect(!exists(store.layerTarPath(onlyA)))
            #expect(!exists(store.layerIndexPath(onlyA)))

            #expect(store.hasImage(b.digest))
            #expect(try store.readImage(b.digest) == b)
            for blob in b.blobs { #expect(store.hasBlob(blob)) }
            #expect(store.hasLayer(shared))
            #expect(store.hasLayer(onlyB))
            #expect(try store.references() == [refB.description: b.digest])

            let again = try await store.collectGarbage()
            #expect(again.removedImages == [])
            #expect(again.freedBytes == 0)
        }
    }

    @Test func configSharedWithALiveImageSurvives() async throws {
        try await withStore { store in
            let a = try Self.storeImage(store, name: "a", layerContents: ["x"], config: "same config")
            let b = try Self.storeImage(store, name: "b", layerContents: ["x"], config: "same config")
            #expect(a.configDigest == b.configDigest)
            try await store.setReference(try Reference("b"), to: b.digest)
            let report = try await store.collectGarbage()
            #expect(report.removedImages == [a.digest])
            #expect(report.removedLayers == [])
            #expect(!store.hasBlob(a.digest))
            #expect(try store.readBlob(b.configDigest) == bytes("same config"))
            #expect(store.hasLayer(b.layers[0].diffID))
        }
    }

    @Test func keepProtectsAnUnreferencedImage() async throws {
        try await withStore { store in
            let a = try Self.storeImage(store, name: "a", layerContents: ["x"])
            let kept = try await store.collectGarbage(keep: [a.digest])
            #expect(kept.removedImages == [])
            #expect(store.hasImage(a.digest))
            #expect(store.hasLayer(a.layers[0].diffID))

            let gone = try await store.collectGarbage()
            #expect(gone.removedImages == [a.digest])
            #expect(gone.removedLayers == [a.layers[0].diffID])
            #expect(list(store.imagesDir) == [])
            #expect(list(store.blobsDir) == [])
            #expect(list(store.layersDir) == [])
        }
    }

    @Test func removesStrayBlobsLayersAndPartials() async throws {
        try await withStore { store in
            let stray = bytes("stray blob")
            try store.writeBlob(stray, digest: Digest.of(stray))
            let strayLayer = Digest.of(bytes("stray layer"))
            try writeFile(bytes("stray layer"), to: store.layerTarPath(strayLayer))
            try writeFile(bytes("p"), to: store.tmpDir + "/abc.partial")
            try writeFile(bytes("t"), to: store.tmpDir + "/.refs.json.1.2.tmp")
            try writeFile(bytes("not a digest"), to: store.blobsDir + "/README")

            let report = try await store.collectGarbage()
            #expect(report.removedLayers == [strayLayer])
            #expect(report.freedBytes > 0)
            #expect(!store.hasBlob(Digest.of(stray)))
            #expect(!exists(store.layerTarPath(strayLayer)))
            #expect(list(store.tmpDir) == [".refs.json.1.2.tmp"], "a fresh atomic-write temp file may belong to a running command")
            #expect(list(store.blobsDir) == ["README"])
        }
    }

    @Test func damagedNamesStopEveryWriterAndCollector() async throws {
        try await withStore { store in
            let a = try Self.storeImage(store, name: "a", layerContents: ["x"])
            try await store.setReference(try Reference("a"), to: a.digest)
            try writeFile(bytes("{"), to: store.root + "/refs.json")
            #expect(throws: StoreError.self) { try store.references() }
            await #expect(throws: StoreError.self) { try await store.setReference(try Reference("b"), to: a.digest) }
            await #expect(throws: StoreError.self) { _ = try await store.collectGarbage() }
            #expect(try Array(Data(contentsOf: URL(fileURLWithPath: store.root + "/refs.json"))) == bytes("{"), "the damaged file was rewritten")
            #expect(store.hasImage(a.digest) && a.layers.allSatisfy { store.hasLayer($0) })
        }
    }

    @Test func aNamedDamagedRecordStopsCollectionAnUnnamedOneIsCollected() async throws {
        try await withStore { store in
            let a = try Self.storeImage(store, name: "a", layerContents: ["x"])
            let b = try Self.storeImage(store, name: "b", layerContents: ["y"])
            try await store.setReference(try Reference("a"), to: a.digest)
            try writeFile(bytes("{\"digest\""), to: store.imagesDir + "/\(a.digest.hex).json")
            await #expect(throws: StoreError.self) { _ = try await store.collectGarbage() }
            #expect(store.hasImage(b.digest), "nothing is removed when collection is refused")

            _ = try await store.removeReference("docker.io/library/a:latest")
            let report = try await store.collectGarbage()
            #expect(Set(report.removedImages) == [a.digest, b.digest])
        }
    }

    @Test func releasedExclusiveLocksLeaveNoFiles() async throws {
        try await withStore { store in
            let first = try await store.lock("blob-1")
            #expect(try store.tryLock("blob-1") == nil)
            first.release()
            #expect(!exists(store.locksDir + "/blob-1.lock"))
            let again = try #require(try store.tryLock("blob-1"))
            #expect(try store.tryLock("blob-1") == nil, "a lock taken after the unlink still excludes")
            again.release()
        }
    }
}

/// The chunk sums a pull would have recorded for `bytes`.
func sums(of bytes: [UInt8]) -> ChunkSums {
    var summer = ChunkSummer()
    bytes.withUnsafeBytes { summer.update($0) }
    return summer.finish()
}
