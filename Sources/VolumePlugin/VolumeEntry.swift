import FileIO
import Foundation
import OCI

/// A named volume: which image it shows and who uses it. Persisted so a restarted plugin
/// still knows its volumes (and adopts mounts whose servers kept running).
struct VolumeEntry: Codable, Sendable, Equatable {
    var name: String
    var image: String
    var subpath: String?
    var pullPolicy: String?
    var tlsVerify: Bool?
    var platform: String?
    /// `--opt lazy=true`: the first Mount serves before the image has arrived (podman gives a
    /// plugin call 5 s: a big image cannot be pulled inside it).
    var lazy: Bool?
    /// Container ids that have it mounted; the FUSE mount lives while this is not empty.
    var users: Set<String> = []
}

struct VolumeFile: Sendable {
    let path: String
    let tmpDir: String

    func load() -> [String: VolumeEntry] {
        guard let bytes = try? FileSystem.readFile(path),
              let volumes = try? JSONCoding.decode([String: VolumeEntry].self, from: bytes, what: "volumes.json") else { return [:] }
        return volumes
    }

    func save(_ volumes: [String: VolumeEntry]) throws {
        try FileSystem.writeAtomically(JSONCoding.encode(volumes, pretty: true), to: path, tmpDir: tmpDir, mode: 0o600)
    }
}
