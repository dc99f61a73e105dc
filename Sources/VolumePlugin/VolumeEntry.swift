import FileIO
import Foundation
import OCI
import Store

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

/// The plugin's volumes file. Damaged, it is an error: a plugin that started empty would
/// forget every volume and orphan their mounts.
extension VolumeEntry {
    static func file(_ store: ContentStore) -> StateFile<[String: VolumeEntry]> {
        StateFile(path: store.layout.volumePluginState, what: "the volume plugin's volumes", initial: [:])
    }
}
