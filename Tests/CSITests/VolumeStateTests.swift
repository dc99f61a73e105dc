@testable import CSI
import Foundation
import OCI
import Store
import Testing

@Suite("VolumeState")
struct VolumeStateTests {
    static func volume(_ id: String, _ target: String) -> PublishedVolume {
        PublishedVolume(volumeID: id, targetPath: target, image: "quay.io/org/app:v1", digest: .of(Array(id.utf8)), subPath: "models",
                        attributes: ["image": "quay.io/org/app:v1", "subPath": "models"], publishedAt: "2024-01-01T00:00:00Z")
    }

    @Test func tableWritesThroughAndReloads() async throws {
        let dir = try PluginHarness.makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/tmp", withIntermediateDirectories: true)
        let file = VolumeStateFile(store: try ContentStore(root: dir))
        let table = try VolumeTable(file: file)
        try await table.put(Self.volume("a", "/t/1"))
        try await table.put(Self.volume("a", "/t/2"))
        try await table.put(Self.volume("b", "/t/3"))
        try await table.remove(PublishedVolume.Key(volumeID: "a", targetPath: "/t/1"))

        let reloaded = try VolumeTable(file: file)
        #expect(await reloaded.count == 2)
        #expect(await reloaded.get(PublishedVolume.Key(volumeID: "a", targetPath: "/t/2")) == Self.volume("a", "/t/2"))
        let attributes = try FileManager.default.attributesOfItem(atPath: dir + "/csi/volumes.json")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
    }

    @Test func missingFileIsEmptyCorruptFileIsAnError() throws {
        let dir = try PluginHarness.makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = VolumeStateFile(store: try ContentStore(root: dir))
        #expect(try file.load().isEmpty)
        try FileManager.default.createDirectory(atPath: dir + "/csi", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir + "/csi/volumes.json", contents: Data("{".utf8))
        #expect(throws: CSIError.self) { try file.load() }
    }
}
