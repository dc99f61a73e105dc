import FileIO
import Store
import Foundation
import OCI

/// One published volume: a volume id mounted at one target path. Kubelet may publish the
/// same volume id at several targets (a pre-provisioned PV used by two pods on the node), so
/// records are keyed by both.
struct PublishedVolume: Codable, Sendable, Equatable {
    var volumeID: String
    var targetPath: String
    /// The reference as the pod gave it, normalised (`alpine` → `docker.io/library/alpine:latest`).
    var image: String
    /// The manifest the mount serves; a restart re-mounts exactly this content, never a newer tag.
    var digest: Digest
    var subPath: String?
    /// `volume_context` without kubelet's `csi.storage.k8s.io/*` keys. Secrets are never stored:
    /// they arrive in a separate field and are used only for the pull.
    var attributes: [String: String]
    var publishedAt: String

    struct Key: Hashable, Sendable {
        var volumeID: String
        var targetPath: String
    }

    var key: Key { Key(volumeID: volumeID, targetPath: targetPath) }
}

/// `ROOT/csi/volumes.json`: what this node has published, so a restarted plugin knows which
/// mounts are its own, can re-serve those whose servers died, and still answers
/// NodeUnpublishVolume and NodeGetVolumeStats for volumes published before the restart.
struct VolumeStateFile: Sendable {
    struct Document: Codable {
        var version = 1
        var volumes: [PublishedVolume]
    }

    let path: String
    let tmpDir: String

    init(store: ContentStore) {
        self.path = store.layout.csiState
        self.tmpDir = store.tmpDir
    }

    /// A missing file is an empty state; an unreadable one is an error, not silently empty,
    /// since forgetting volumes would leave their mounts orphaned.
    func load() throws -> [PublishedVolume] {
        guard FileSystem.exists(path) else { return [] }
        let bytes = try FileSystem.readFile(path)
        do {
            return try JSONDecoder().decode(Document.self, from: Data(bytes)).volumes
        } catch {
            throw CSIError.internalError("\(path) is not a valid CSI state file (\(error)); move it aside to start empty")
        }
    }

    /// Atomic (temp file + fsync + rename): a crash leaves the old state or the new one.
    func save(_ volumes: [PublishedVolume]) throws {
        try FileSystem.makeDirectories(FileSystem.parent(of: path), mode: 0o700)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let sorted = volumes.sorted { ($0.volumeID, $0.targetPath) < ($1.volumeID, $1.targetPath) }
        let bytes = try encoder.encode(Document(volumes: sorted))
        try FileSystem.writeAtomically(Array(bytes), to: path, tmpDir: tmpDir, mode: 0o600)
    }
}

/// The published volumes in memory, written through to the state file on every change. An
/// actor, so concurrent publishes of different volumes never lose each other's updates.
actor VolumeTable {
    private let file: VolumeStateFile
    private var volumes: [PublishedVolume.Key: PublishedVolume] = [:]

    init(file: VolumeStateFile) throws {
        self.file = file
        for volume in try file.load() { volumes[volume.key] = volume }
    }

    var all: [PublishedVolume] { Array(volumes.values) }
    var count: Int { volumes.count }

    func get(_ key: PublishedVolume.Key) -> PublishedVolume? { volumes[key] }

    func put(_ volume: PublishedVolume) throws {
        let previous = volumes[volume.key]
        volumes[volume.key] = volume
        do { try file.save(Array(volumes.values)) } catch {
            volumes[volume.key] = previous
            throw error
        }
    }

    func remove(_ key: PublishedVolume.Key) throws {
        guard let previous = volumes.removeValue(forKey: key) else { return }
        do { try file.save(Array(volumes.values)) } catch {
            volumes[key] = previous
            throw error
        }
    }
}
