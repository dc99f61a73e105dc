import ArgumentParser
import Foundation
import Pull
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

    @Option(help: ArgumentHelp("How long a registry may stay silent (connecting, the TLS handshake, between two reads) before the request is retried (default: 30s).", valueName: "duration"))
    var timeout: String?

    @Option(name: .customLong("retry-times"), help: ArgumentHelp("Retries of a registry request that failed or timed out, a blob resuming where it stopped (default: 5).", valueName: "n"))
    var retryTimes: Int?

    @Flag(name: .shortAndLong, help: "No progress output.")
    var quiet = false

    func clientOptions() throws -> RegistryClient.Options {
        var options = RegistryClient.Options()
        options.tlsVerify = tlsVerify
        if let creds { options.credentials = try Credentials(parsing: creds) }
        options.authFile = AuthFile(paths: AuthFile.searchPaths(explicit: authfile))
        options.authFileExplicit = authfile != nil
        if authfile != nil { try options.authFile.validate() }
        options.registriesConf = try RegistriesConf.load(explicit: registriesConf)
        if let timeout { options.timeout = try RequestTimeout.parse(timeout) }
        if let retryTimes {
            guard retryTimes >= 0 else { throw RegistryError(.invalidConfiguration, "--retry-times must be 0 or more, not \(retryTimes)") }
            options.maxAttempts = retryTimes + 1
        }
        return options
    }

    /// The flags to hand to a lazy mount's server (credentials travel separately).
    var forwardedArguments: [String] {
        var arguments = ["--tls-verify=\(tlsVerify)", "--quiet"]
        if let platform { arguments += ["--platform", platform] }
        if let authfile { arguments += ["--authfile", authfile] }
        if let registriesConf { arguments += ["--registries-conf", registriesConf] }
        if let timeout { arguments += ["--timeout", timeout] }
        if let retryTimes { arguments += ["--retry-times", String(retryTimes)] }
        return arguments
    }

    func targetPlatform() throws -> Platform {
        try platform.map { try Platform(parsing: $0) } ?? .host
    }

    /// The pull session these flags describe, drawing progress on a TTY. Everything that can
    /// reject the flags runs here, before any registry client exists.
    func session(store: ContentStore, logger: Logger, display: ProgressDisplay?) throws -> PullSession {
        var settings = PullSession.Settings(client: try clientOptions(), platform: try targetPlatform(), progress: display)
        settings.platformChosen = platform != nil
        return PullSession(store: store, logger: logger, settings: settings)
    }

    /// Runs `body` with this command's pull session; the progress display is finished after.
    func withSession<T: Sendable>(store: ContentStore, logger: Logger, _ body: (PullSession) async throws -> T) async throws -> T {
        let display = ProgressDisplay.forTerminal(quiet: quiet)
        defer { display?.finish() }
        return try await body(try session(store: store, logger: logger, display: display))
    }

    /// The image for commands that use one (mount, unpack): from the cache when the policy
    /// allows, without creating a registry client at all.
    func image(_ reference: Reference, policy: PullPolicy, store: ContentStore, logger: Logger) async throws -> ImageRecord {
        try await withSession(store: store, logger: logger) { try await $0.image(reference, policy: policy) }
    }
}
