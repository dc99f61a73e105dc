import ArgumentParser
import Foundation
import ImgvolCore
import Logging
import OCI
import Registry
import Store

/// The podman/skopeo pull flags, shared by every command that may pull.
struct PullOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Platform to choose from a multi-arch image (default: this host).", valueName: "os/arch[/variant]"))
    var platform: String?

    @Option(name: .customLong("tls-verify"), help: "Require HTTPS and verify certificates; =false allows plain HTTP and self-signed registries.")
    var tlsVerify: Bool = true

    @Option(help: ArgumentHelp("Credentials for the registry.", valueName: "username:password"))
    var creds: String?

    @Option(help: ArgumentHelp("auth.json to read credentials from (default: $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json).", valueName: "path"))
    var authfile: String?

    @Option(name: .customLong("registries-conf"), help: ArgumentHelp("registries.conf (v2) with mirrors and rewrites (default: $CONTAINERS_REGISTRIES_CONF, else /etc/containers/registries.conf).", valueName: "path"))
    var registriesConf: String?

    @Flag(name: .shortAndLong, help: "No progress output.")
    var quiet = false

    func clientOptions() throws -> RegistryClient.Options {
        var options = RegistryClient.Options()
        options.tlsVerify = tlsVerify
        if let creds { options.credentials = try Credentials(parsing: creds) }
        options.authFile = AuthFile(paths: AuthFile.searchPaths(explicit: authfile))
        options.authFileExplicit = authfile != nil
        options.registriesConf = try RegistriesConf.load(explicit: registriesConf)
        return options
    }

    /// The flags to hand to a lazy mount's server (credentials travel separately).
    var forwardedArguments: [String] {
        var arguments = ["--tls-verify=\(tlsVerify)", "--quiet"]
        if let platform { arguments += ["--platform", platform] }
        if let authfile { arguments += ["--authfile", authfile] }
        if let registriesConf { arguments += ["--registries-conf", registriesConf] }
        return arguments
    }

    func targetPlatform() throws -> Platform {
        try platform.map { try Platform(parsing: $0) } ?? .host
    }

    /// The image for commands that use one (mount, unpack): from the cache when the policy
    /// allows, without creating a registry client at all (its set-up and shutdown would be
    /// most of the time a mount of a cached image takes).
    func image(_ reference: Reference, policy: ImageService.PullPolicy, service: ImageService, logger: Logger) async throws -> ImageRecord {
        let platform = try targetPlatform()
        if policy != .always, let cached = service.cachedImage(reference, platform: platform) { return cached }
        return try await withPuller(store: service.store, logger: logger) { puller in
            try await service.image(reference, platform: platform, policy: policy) { puller }
        }
    }

    /// Runs `body` with a puller whose client is shut down afterwards, drawing progress on a TTY.
    func withPuller<T>(store: ContentStore, logger: Logger, _ body: (Puller) async throws -> T) async throws -> T {
        // Everything that can reject the flags runs before the client exists: a client must be
        // shut down once created.
        let options = try clientOptions()
        let platform = try targetPlatform()
        let client = RegistryClient(options: options, logger: logger)
        var puller = Puller(store: store, client: client, logger: logger)
        puller.platform = platform
        if let text = ProcessInfo.processInfo.environment["IMGVOL_RANGE_STREAMS"], let streams = Int(text), streams > 0 {
            puller.rangeStreams = streams
        }
        let display = ProgressDisplay.forTerminal(quiet: quiet)
        puller.progress = display
        do {
            let result = try await body(puller)
            display?.finish()
            await client.shutdown()
            return result
        } catch {
            display?.finish()
            await client.shutdown()
            throw error
        }
    }
}
