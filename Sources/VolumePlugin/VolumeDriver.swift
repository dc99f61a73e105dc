import FileIO
import Foundation
import Mounts
import Pull
import Logging
import OCI
import Registry
import Store

/// The volume driver's logic: create records a volume, the first Mount pulls and mounts it,
/// the last Unmount unmounts it. An actor, and each call holds its volume's lock across its
/// awaits (a pull, a launch): a Remove during a Mount's pull waits for it instead of being
/// undone by it, and two Mounts of one volume give one mount.
actor VolumeDriver {
    let store: ContentStore
    let logger: Logger
    let file: StateFile<[String: VolumeEntry]>
    private let locks = KeyedLock<String>()
    let mountsRoot: String
    private var volumes: [String: VolumeEntry]

    init(store: ContentStore, logger: Logger) throws {
        self.store = store
        self.logger = logger
        self.file = VolumeEntry.file(store)
        self.mountsRoot = store.layout.volumePluginMounts
        try FileSystem.makeDirectory(mountsRoot, mode: 0o755)
        self.volumes = try file.load()
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    static func isAlnum(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)
    }

    func mountpoint(_ name: String) -> String { "\(mountsRoot)/\(name)" }

    func create(_ name: String, options: [String: String]) async throws {
        try await locks.withLock(name) { try await self.createNow(name, options: options) }
    }

    func remove(_ name: String) async throws {
        try await locks.withLock(name) { try await self.removeNow(name) }
    }

    func mount(_ name: String, id: String) async throws -> String {
        try await locks.withLock(name) { try await self.mountNow(name, id: id) }
    }

    func unmount(_ name: String, id: String) async throws {
        try await locks.withLock(name) { try await self.unmountNow(name, id: id) }
    }

    private func createNow(_ name: String, options: [String: String]) throws {
        // Docker's rule for volume names; the name becomes a directory under ROOT/volumes.
        let valid = name.utf8.first.map(Self.isAlnum) == true
            && name.utf8.allSatisfy { Self.isAlnum($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
        guard valid, name.utf8.count <= 255 else {
            throw Failure("invalid volume name \"\(name)\": use letters, digits, \"_\", \".\" and \"-\", starting with a letter or digit")
        }
        guard let image = options["image"] ?? options["ref"], !image.isEmpty else {
            throw Failure("volume \(name) needs an image: podman volume create --driver imgvol --opt image=REF \(name)")
        }
        _ = try Reference(image)
        let known = Set(["image", "ref", "subpath", "pull", "tls-verify", "platform", "lazy"])
        if let unknown = options.keys.first(where: { !known.contains($0) }) {
            throw Failure("unknown option \"\(unknown)\" for volume \(name); known: \(known.sorted().joined(separator: ", "))")
        }
        if let existing = volumes[name] {
            guard existing.image == image else { throw Failure("volume \(name) exists with image \(existing.image)") }
            return
        }
        if let lazy = options["lazy"], lazy != "true", lazy != "false" {
            throw Failure("option lazy=\(lazy) for volume \(name): use lazy=true or lazy=false")
        }
        volumes[name] = VolumeEntry(name: name, image: image, subpath: options["subpath"], pullPolicy: options["pull"],
                                    tlsVerify: options["tls-verify"].map { $0 != "false" }, platform: options["platform"],
                                    lazy: options["lazy"].map { $0 == "true" })
        try file.save(volumes, tmpDir: store.tmpDir)
    }

    private func removeNow(_ name: String) async throws {
        // podman only asks once no container of its own uses the volume (or with --force), so
        // the volume goes even if an Unmount was missed.
        guard volumes[name] != nil else { throw Failure("no volume \(name)") }
        if MountTable.isMountpoint(mountpoint(name)) {
            try await MountLauncher(store: store).unmount(mountpoint(name), force: true)
        }
        volumes[name] = nil
        try? FileManager.default.removeItem(atPath: mountpoint(name))
        try file.save(volumes, tmpDir: store.tmpDir)
    }

    private func mountNow(_ name: String, id: String) async throws -> String {
        guard var entry = volumes[name] else { throw Failure("no volume \(name)") }
        let path = mountpoint(name)
        if !isServing(path) {
            if MountTable.isMountpoint(path) { try? await MountLauncher(store: store).unmount(path, force: true) }
            try FileSystem.makeDirectory(path, mode: 0o755)
            let reference = try Reference(entry.image)
            let launcher = MountLauncher(store: store)
            if entry.lazy == true, let source = try lazySource(entry, reference: reference) {
                _ = try await launcher.launch(reference: reference, digest: nil, mountpoint: path, subpath: entry.subpath, lazy: source)
            } else {
                let record = try await pull(entry, reference: reference)
                _ = try await launcher.launch(reference: reference, digest: record.digest, mountpoint: path, subpath: entry.subpath)
            }
        }
        entry.users.insert(id)
        volumes[name] = entry
        try file.save(volumes, tmpDir: store.tmpDir)
        return path
    }

    private func unmountNow(_ name: String, id: String) async throws {
        guard var entry = volumes[name] else { throw Failure("no volume \(name)") }
        entry.users.remove(id)
        volumes[name] = entry
        try file.save(volumes, tmpDir: store.tmpDir)
        if entry.users.isEmpty, MountTable.isMountpoint(mountpoint(name)) {
            try await MountLauncher(store: store).unmount(mountpoint(name), force: true)
        }
    }

    func get(_ name: String) throws -> VolumePluginAPI.Volume {
        guard let entry = volumes[name] else { throw Failure("no volume \(name)") }
        return describe(entry)
    }

    func list() -> [VolumePluginAPI.Volume] {
        volumes.values.sorted { $0.name < $1.name }.map(describe)
    }

    private func describe(_ entry: VolumeEntry) -> VolumePluginAPI.Volume {
        let path = mountpoint(entry.name)
        return VolumePluginAPI.Volume(Name: entry.name, Mountpoint: isServing(path) ? path : "",
                                      Status: ["image": entry.image, "users": String(entry.users.count)])
    }

    private func isServing(_ path: String) -> Bool {
        MountTable(store: store).live().contains { $0.mountpoint == path }
    }

    /// The server's registry flags for a lazy mount; nil when the cache can serve it.
    private func lazySource(_ entry: VolumeEntry, reference: Reference) throws -> MountLauncher.LazySource? {
        let (platform, policy) = try settings(entry)
        if policy != .always, try store.completeImage(reference, platform: platform) != nil { return nil }
        guard policy != .never else {
            throw Failure("image \(reference) of volume \(entry.name) is not cached and pull=never; pull it first")
        }
        return MountLauncher.LazySource(
            pullArguments: ["--tls-verify=\(entry.tlsVerify ?? true)", "--quiet", "--platform", platform.description], credentials: nil)
    }

    private func settings(_ entry: VolumeEntry) throws -> (Platform, PullPolicy) {
        (try entry.platform.map { try Platform(parsing: $0) } ?? .host,
         entry.pullPolicy.flatMap(PullPolicy.init(rawValue:)) ?? .missing)
    }

    private func pull(_ entry: VolumeEntry, reference: Reference) async throws -> ImageRecord {
        let (platform, policy) = try settings(entry)
        // A cached image needs no registry configuration at all.
        if policy != .always, let cached = try store.completeImage(reference, platform: platform) { return cached }
        var options = RegistryClient.Options()
        options.tlsVerify = entry.tlsVerify ?? true
        options.registriesConf = try RegistriesConf.load(explicit: nil)
        var settings = PullSession.Settings(client: options, platform: platform)
        settings.platformChosen = entry.platform != nil
        let session = PullSession(store: store, logger: logger, settings: settings)
        return try await session.image(reference, policy: policy)
    }
}
