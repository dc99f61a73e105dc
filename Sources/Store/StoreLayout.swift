import Layers
import OCI
#if canImport(Glibc)
import Glibc
#endif

/// Every path under the store's root, built here and nowhere else:
///
///     blobs/sha256/<hex>     manifests, indexes, configs and raw artifact files, verified
///     blobs/sha256/<hex>.sums  a raw artifact file's chunk sums (`ChunkSums`)
///     layers/<hex>.tar       a layer's uncompressed tar, named by its diff_id (for an
///                            uncompressed layer this is the registry blob itself: no copy)
///     layers/<hex>.idx       its entry index (where each file's bytes sit in the tar)
///     layers/<hex>.files/    its regular files of 1 MiB or more, one file each, named by
///                            their offset in the tar, which keeps a hole there (`ApartFiles`)
///     layers/<hex>.sums      chunk sums of the tar and of each file apart (`StoredSums`),
///                            checked before a mount first serves a chunk
///     images/<hex>.json      one record per pulled image manifest
///     images/<hex>.tree      its merged tree, cached (derived: safe to delete)
///     refs.json              reference -> manifest digest
///     tmp/                   partial downloads and files being written
///     damaged/               parts found damaged, moved aside (a pull fetches them again;
///                            prune reclaims them)
///     reports/<hex>.json     damage a mount server found while serving (for `check`)
///     locks/                 flock files
///     mounts/<key>.json|log  live mounts and their servers' logs
///     mounts/<key>.session   what a server taking a live mount over needs (FUSE INIT, backings)
///                            (under /run/imgvol/ when the store is read-only)
///     volumes.json, volumes/ the podman volume plugin's volumes and their mountpoints
///     csi/volumes.json       the CSI plugin's published volumes
public struct StoreLayout: Sendable, Equatable {
    public let root: String
    /// `ROOT/mounts`, or for a store on read-only media (pre-seeded for a device) a directory
    /// under /run named by the root: live mounts need somewhere to write their records.
    public let mountsDir: String

    public init(root: String, readOnly: Bool = false) {
        self.root = root.count > 1 && root.hasSuffix("/") ? String(root.dropLast()) : root
        mountsDir = readOnly ? "/run/imgvol/\(Digest.of(Array(self.root.utf8)).hex.prefix(16))/mounts" : self.root + "/mounts"
    }

    public var blobsDir: String { root + "/blobs/sha256" }
    public var layersDir: String { root + "/layers" }
    public var imagesDir: String { root + "/images" }
    public var tmpDir: String { root + "/tmp" }
    public var locksDir: String { root + "/locks" }
    public var damagedDir: String { root + "/damaged" }
    public var reportsDir: String { root + "/reports" }
    var refs: String { root + "/refs.json" }

    func blob(_ digest: Digest) -> String { "\(blobsDir)/\(digest.hex)" }
    func layerTar(_ diffID: Digest) -> String { "\(layersDir)/\(diffID.hex).tar" }
    func layerIndex(_ diffID: Digest) -> String { "\(layersDir)/\(diffID.hex).idx" }
    func layerFiles(_ diffID: Digest) -> ApartFiles { ApartFiles(directory: "\(layersDir)/\(diffID.hex).files") }
    func layerSums(_ diffID: Digest) -> String { "\(layersDir)/\(diffID.hex).sums" }
    func blobSums(_ digest: Digest) -> String { "\(blobsDir)/\(digest.hex).sums" }
    func report(_ digest: Digest) -> String { "\(reportsDir)/\(digest.hex).json" }
    func image(_ digest: Digest) -> String { "\(imagesDir)/\(digest.hex).json" }
    func tree(_ digest: Digest) -> String { "\(imagesDir)/\(digest.hex).tree" }
    func lock(_ name: String) -> String { "\(locksDir)/\(name).lock" }

    /// A download that survives the process, for a later pull to resume.
    public func partial(_ digest: Digest) -> String { "\(tmpDir)/\(digest.hex).partial" }

    /// What a running process writes for blob `digest` and then commits or deletes: named
    /// by the process, so concurrent pulls never share one.
    public func scratch(_ digest: Digest, _ purpose: ScratchPurpose) -> String {
        "\(tmpDir)/\(digest.hex).\(purpose.rawValue)-\(getpid())"
    }

    /// A layer tar being decompressed, with the directory of its big files beside it.
    public func scratchTar(_ digest: Digest) -> ScratchTar {
        let base = "\(tmpDir)/\(digest.hex).\(getpid())"
        return ScratchTar(tar: base + ".tar", apart: ApartFiles(directory: base + ".files"))
    }

    public func mountRecord(_ key: String) -> String { "\(mountsDir)/\(key).json" }
    public func mountLog(_ key: String) -> String { "\(mountsDir)/\(key).log" }
    public func mountSession(_ key: String) -> String { "\(mountsDir)/\(key).session" }

    public var volumePluginState: String { root + "/volumes.json" }
    public var volumePluginMounts: String { root + "/volumes" }
    public var csiState: String { root + "/csi/volumes.json" }
}

/// Why a scratch file exists, which is also its name's suffix.
public enum ScratchPurpose: String, Sendable {
    /// A big blob over several `Range` streams.
    case ranged
    /// A lazy mount's blob, arriving chunk by chunk.
    case lazy
}

/// A layer tar being written outside the store: its tar and its files stored apart.
public struct ScratchTar: Sendable, Equatable {
    public let tar: String
    public let apart: ApartFiles
}
