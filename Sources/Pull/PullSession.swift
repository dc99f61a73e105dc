import Foundation
import Logging
import OCI
import Registry
import Store

/// When a command may go to the registry for an image (podman's `--pull`).
public enum PullPolicy: String, Sendable, CaseIterable {
    case always, missing, never
}

/// How every front end (the CLI, the CSI plugin, the volume plugin) pulls: one session owns a
/// registry client made for its settings, runs pulls or a lazy mount's pull through it, and
/// shuts it down afterwards. A cached image needs no client at all: `image` answers from the
/// store first when the policy allows, since a client's set-up and shutdown would be most of
/// the time a mount of a cached image takes.
public struct PullSession: Sendable {
    public struct Settings: Sendable {
        public var client: RegistryClient.Options
        public var platform: Platform
        /// The user named the platform (`--platform`): a single-platform image of another one
        /// is then an error, not a warning.
        public var platformChosen = false
        public var progress: (any PullProgress)?
        /// Layers downloaded at once.
        public var parallelLayers = 3
        /// Concurrent `Range` streams for one big blob (`IMGVOL_RANGE_STREAMS`, default 2).
        public var rangeStreams: Int

        public init(client: RegistryClient.Options = RegistryClient.Options(), platform: Platform = .host,
                    progress: (any PullProgress)? = nil) {
            self.client = client
            self.platform = platform
            self.progress = progress
            let configured = ProcessInfo.processInfo.environment["IMGVOL_RANGE_STREAMS"].flatMap { Int($0) }
            rangeStreams = configured.map { max(1, $0) } ?? 2
        }
    }

    public let store: ContentStore
    public let logger: Logger
    public var settings: Settings

    public init(store: ContentStore, logger: Logger, settings: Settings) {
        self.store = store
        self.logger = logger
        self.settings = settings
    }

    /// The image for `reference` on this session's platform: from the store when `policy`
    /// allows, pulled otherwise.
    public func image(_ reference: Reference, policy: PullPolicy) async throws -> ImageRecord {
        if policy != .always, let cached = try store.completeImage(reference, platform: settings.platform) { return cached }
        guard policy != .never else {
            throw PullError(.notCached, "image \(reference) is not in the store at \(store.root) and --pull=never was given; pull it first")
        }
        return try await pull(reference)
    }

    /// Pulls `reference` (a cached image costs a manifest request).
    @discardableResult
    public func pull(_ reference: Reference) async throws -> ImageRecord {
        try await withPuller { try await $0.pull(reference) }
    }

    /// Starts a lazy pull of `reference` (of the manifest `pinned`, when given) and runs `body`
    /// (which serves it) while the client lives.
    public func lazily<T: Sendable>(_ reference: Reference, pinned: Digest? = nil, _ body: (LazyPull) async throws -> T) async throws -> T {
        try await withPuller { puller in try await body(try await LazyPull.start(reference, pinned: pinned, puller: puller)) }
    }

    /// Runs `body` with a puller whose client is shut down afterwards, whatever happens.
    func withPuller<T: Sendable>(_ body: (Puller) async throws -> T) async throws -> T {
        let client = RegistryClient(options: settings.client, logger: logger)
        var puller = Puller(store: store, client: client, logger: logger)
        puller.platform = settings.platform
        puller.platformChosen = settings.platformChosen
        puller.progress = settings.progress
        puller.parallelLayers = settings.parallelLayers
        puller.rangeStreams = settings.rangeStreams
        do {
            let result = try await body(puller)
            await client.shutdown()
            return result
        } catch {
            await client.shutdown()
            throw error
        }
    }
}
