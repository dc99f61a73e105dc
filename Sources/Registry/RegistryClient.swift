import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import OCI
import FileIO

/// The OCI distribution client: one per command, shared by all of its downloads.
///
/// Auth follows the registry's `WWW-Authenticate` challenge: Basic, or a Bearer token fetched
/// from the realm with scope `repository:NAME:pull`, cached per host and repository.
/// Credentials are attached only to the registry's own host, never to redirect targets.
public final class RegistryClient: Sendable {
    public struct Options: Sendable {
        public var tlsVerify: Bool = true
        /// `--creds`: used for every registry of this command.
        public var credentials: Credentials?
        public var authFile: AuthFile = AuthFile(paths: AuthFile.searchPaths(explicit: nil))
        public var authFileExplicit = false
        public var registriesConf = RegistriesConf()
        public var userAgent = "imgvol/\(ImgvolVersion.current)"
        /// Attempts per request before a transient failure is final (`--retry-times` + 1).
        public var maxAttempts = 6
        /// `--timeout`: silence allowed between two reads of an answer (and, capped by
        /// `RequestTimeout.defaultConnect`, for connecting and the TLS handshake).
        public var timeout: TimeAmount = RequestTimeout.defaultIdle

        public init() {}
    }

    let options: Options
    let logger: Logger
    let verifiedClient: HTTPClient
    let unverifiedClient: HTTPClient
    let state = ClientState()

    public init(options: Options, logger: Logger) {
        self.options = options
        self.logger = logger
        // AsyncHTTPClient's connect deadline covers the TLS handshake too; `read` is the idle
        // timeout between two reads, so a slow but moving blob stream is never cut.
        let timeout = HTTPClient.Configuration.Timeout(connect: min(options.timeout, RequestTimeout.defaultConnect), read: options.timeout)
        var pool = HTTPClient.Configuration.ConnectionPool(idleTimeout: .seconds(30))
        pool.concurrentHTTP1ConnectionsPerHostSoftLimit = 16
        var verified = HTTPClient.Configuration(redirectConfiguration: .disallow, timeout: timeout, connectionPool: pool)
        verified.tlsConfiguration = .makeClientConfiguration()
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .none
        var unverified = HTTPClient.Configuration(tlsConfiguration: tls, redirectConfiguration: .disallow, timeout: timeout, connectionPool: pool)
        unverified.httpVersion = .automatic
        verifiedClient = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: verified)
        unverifiedClient = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: unverified)
    }

    public func shutdown() async {
        try? await verifiedClient.shutdown()
        try? await unverifiedClient.shutdown()
    }

    public func endpoints(for reference: Reference) throws(RegistryError) -> [Endpoint] {
        try options.registriesConf.endpoints(for: reference, tlsVerify: options.tlsVerify)
    }

    func credentials(for endpoint: Endpoint) throws(RegistryError) -> Credentials? {
        if let explicit = options.credentials { return explicit }
        return try options.authFile.credentials(registry: endpoint.registry, repository: endpoint.repository, explicit: options.authFileExplicit)
    }

    // MARK: requests

    /// A request to `path` (under `/v2/`) on `endpoint`, with auth and scheme negotiation.
    /// Non-success statuses are returned, not thrown; callers decide what each means.
    func send(_ method: HTTPMethod, _ path: String, on endpoint: Endpoint, headers: HTTPHeaders = [:],
              timeout: TimeAmount? = nil) async throws -> HTTPClientResponse {
        let timeout = timeout ?? headDeadline
        let base = try await baseURL(for: endpoint)
        func execute(_ authorization: String?) async throws -> HTTPClientResponse {
            var request = HTTPClientRequest(url: base + path)
            request.method = method
            request.headers = headers
            request.headers.replaceOrAdd(name: "User-Agent", value: options.userAgent)
            if let authorization { request.headers.replaceOrAdd(name: "Authorization", value: authorization) }
            return try await client(for: endpoint).execute(request, timeout: timeout)
        }
        let response = try await execute(await state.authorization(for: endpoint))
        // A 401 with a challenge: authorize as it asks, once, and send again.
        guard response.status == .unauthorized, let header = response.headers.first(name: "WWW-Authenticate") else { return response }
        guard header.utf8.count <= SizeLimit.authChallenge.bytes else {
            throw SizeLimit.authChallenge.exceeded("the challenge for \(endpoint.repository)", registry: endpoint.registry, size: Int64(header.utf8.count))
        }
        guard let challenge = AuthChallenge(header: header) else { return response }
        _ = try? await response.body.collect(upTo: 1 << 16)
        let authorization = try await authorize(endpoint, challenge: challenge)
        await state.setAuthorization(authorization, for: endpoint)
        guard let authorization else { return response }
        let retried = try await execute(authorization)
        // Credentials were sent and refused: say so, not "authentication required".
        if retried.status == .unauthorized, authorization.hasPrefix("Basic ") {
            _ = try? await retried.body.collect(upTo: 1 << 16)
            throw RegistryError(.unauthorized, "\(endpoint.registry) refused the credentials \(credentialSource) for \(endpoint.repository); check the user name and password")
        }
        return retried
    }

    /// Where the credentials came from, for messages (never the credentials themselves).
    var credentialSource: String {
        if options.credentials != nil { return "given with --creds" }
        return options.authFileExplicit ? "from --authfile \(options.authFile.paths.joined(separator: ", "))" : "from the auth file"
    }

    func client(for endpoint: Endpoint) -> HTTPClient {
        endpoint.insecure ? unverifiedClient : verifiedClient
    }

    /// https, unless the endpoint is insecure and does not speak TLS: then plain http, as podman
    /// does with `--tls-verify=false`. Both are tried at once: a plain-HTTP server never answers
    /// a TLS handshake (it waits for a request line), so trying https first would stall.
    func baseURL(for endpoint: Endpoint) async throws -> String {
        if let known = await state.scheme(for: endpoint.apiHost) { return "\(known)://\(endpoint.apiHost)" }
        guard endpoint.insecure else { return "https://\(endpoint.apiHost)" }
        let scheme = try await probeScheme(endpoint.apiHost)
        await state.setScheme(scheme, for: endpoint.apiHost)
        return "\(scheme)://\(endpoint.apiHost)"
    }

    private func probeScheme(_ host: String) async throws -> String {
        let client = unverifiedClient
        let agent = options.userAgent
        let deadline = options.timeout
        @Sendable func probe(_ scheme: String) async -> Result<String, any Error> {
            var request = HTTPClientRequest(url: "\(scheme)://\(host)/v2/")
            request.headers.add(name: "User-Agent", value: agent)
            do {
                let response = try await client.execute(request, timeout: deadline)
                _ = try? await response.body.collect(upTo: 1 << 16)
                return .success(scheme)
            } catch {
                return .failure(error)
            }
        }
        return try await withThrowingTaskGroup(of: Result<String, any Error>.self) { group in
            group.addTask { await probe("https") }
            group.addTask { await probe("http") }
            // One port speaks TLS or it does not: the first scheme that gets an HTTP answer is it.
            var lastError: (any Error)?
            var timedOut = false
            while let result = try await group.next() {
                switch result {
                case .success(let scheme):
                    group.cancelAll()
                    return scheme
                case .failure(let error):
                    lastError = error
                    timedOut = timedOut || Self.isTimeout(error)
                }
            }
            if timedOut {
                throw stalled("connecting to registry \(host)", registry: host, attempts: 1)
            }
            if let lastError, Self.isConnectFailure(lastError) {
                throw RegistryError(.network, "cannot connect to registry \(host) (\(Self.describe(lastError))); check the address and that the registry is running")
            }
            throw RegistryError(.network, "cannot reach registry \(host) over https or http: \(lastError.map(Self.describe) ?? "no answer")")
        }
    }

    /// The deadline for a response's head: generous beside the idle timeout, which is what
    /// catches a silent registry.
    var headDeadline: TimeAmount { max(.seconds(90), options.timeout * 3) }

    /// A registry that stayed silent for the idle timeout on every attempt.
    func stalled(_ what: String, registry: String, attempts: Int) -> RegistryError {
        let waited = RequestTimeout.describe(options.timeout)
        let tries = attempts == 1 ? "" : " on each of \(attempts) attempts"
        return RegistryError(.timedOut, "\(what): \(registry) gave no answer for \(waited)\(tries); check that it is a registry and reachable, or raise --timeout (and --retry-times)")
    }

    /// Retries transient failures (connection errors, timeouts, 429, 5xx) with exponential
    /// backoff; a blob's retry resumes with `Range` from what arrived.
    func withRetries<T: Sendable>(_ what: String, on endpoint: Endpoint, _ body: () async throws -> T) async throws -> T {
        var delay: UInt64 = 200_000_000
        var attempt = 1
        while true {
            do {
                return try await body()
            } catch let error as RegistryError where error.kind != .network {
                throw error
            } catch let error as SystemError {
                // The local disk failed (a full store, an I/O error), not the registry: a retry
                // would fail the same way, after downloading again.
                throw error
            } catch let error as NIOSSLError {
                throw RegistryError(.network, "\(what): TLS failed (\(error)); if the registry serves plain HTTP or a self-signed certificate, pass --tls-verify=false")
            } catch let error as BoringSSLError {
                throw RegistryError(.network, "\(what): TLS failed (\(error)); if the registry serves plain HTTP or a self-signed certificate, pass --tls-verify=false")
            } catch {
                // The HTTP client already retried connecting for its connect timeout.
                let limit = Self.isConnectFailure(error) ? min(2, options.maxAttempts) : options.maxAttempts
                guard attempt < limit, !(error is CancellationError) else {
                    if let error = error as? RegistryError { throw error }
                    if Self.isTimeout(error) { throw stalled(what, registry: endpoint.registry, attempts: attempt) }
                    throw RegistryError(.network, "\(what) failed after \(attempt) attempts: \(Self.describe(error))")
                }
                logger.info("\(what): \(Self.describe(error)); retrying (attempt \(attempt + 1) of \(options.maxAttempts))")
                try await Task.sleep(nanoseconds: delay)
                delay = min(delay * 2, 5_000_000_000)
                attempt += 1
            }
        }
    }

    /// The registry stayed silent for a timeout (connecting, TLS handshake, or between reads).
    static func isTimeout(_ error: any Error) -> Bool {
        if let error = error as? HTTPClientError {
            return error == .readTimeout || error == .connectTimeout || error == .deadlineExceeded || error == .tlsHandshakeTimeout
        }
        let text = String(describing: error)
        return text.contains("readTimeout") || text.contains("connectTimeout") || text.contains("deadlineExceeded")
    }

    /// Nothing answered at all (refused, unreachable, connect timeout), as opposed to a
    /// connection that broke mid-transfer.
    static func isConnectFailure(_ error: any Error) -> Bool {
        if let error = error as? HTTPClientError, error == .connectTimeout { return true }
        let text = String(describing: error)
        return text.contains("connectTimeout") || text.contains("Connection refused") || text.contains("connectionRefused")
            || text.contains("NIOConnectionError") || text.contains("No route to host") || text.contains("Network is unreachable")
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? RegistryError { return error.message }
        if let error = error as? HTTPClientError { return "HTTP client: \(error)" }
        return "\(error)"
    }

    /// The `errors[].message` of an OCI error body, for messages that say what the registry said.
    static func registryMessage(_ body: ByteBuffer?) -> String {
        guard let body, let data = body.getBytes(at: body.readerIndex, length: body.readableBytes) else { return "" }
        struct Errors: Decodable {
            struct Item: Decodable { var code: String?; var message: String? }
            var errors: [Item]?
        }
        guard let parsed = try? JSONDecoder().decode(Errors.self, from: Data(data)), let items = parsed.errors, !items.isEmpty else { return "" }
        return items.map { [$0.code, $0.message].compactMap { $0 }.joined(separator: ": ") }.joined(separator: "; ")
    }

    /// Maps an unexpected status to an error that says what to do.
    func failure(_ response: HTTPClientResponse, _ what: String, endpoint: Endpoint) async -> RegistryError {
        let body = try? await response.body.collect(upTo: 1 << 16)
        let said = Self.registryMessage(body)
        let detail = said.isEmpty ? "" : " (registry said: \(said))"
        switch response.status.code {
        case 401:
            return RegistryError(.unauthorized, "\(what): authentication required by \(endpoint.registry)\(detail); log in with --creds USER:PASS or --authfile FILE")
        case 403:
            return RegistryError(.denied, "\(what): access denied by \(endpoint.registry)\(detail); check the credentials' permissions")
        case 404:
            return RegistryError(.notFound, "\(what): not found in \(endpoint.registry)\(detail)")
        case 429, 500...599:
            return RegistryError(.network, "\(what): \(endpoint.registry) answered HTTP \(response.status.code)\(detail)")
        default:
            return RegistryError(.badResponse, "\(what): \(endpoint.registry) answered HTTP \(response.status.code)\(detail)")
        }
    }
}

/// Per-client caches: which scheme each host speaks, and the Authorization for each repository.
actor ClientState {
    private var schemes: [String: String] = [:]
    private var authorizations: [Endpoint: String] = [:]

    func scheme(for host: String) -> String? { schemes[host] }
    func setScheme(_ scheme: String, for host: String) { schemes[host] = scheme }
    func authorization(for endpoint: Endpoint) -> String? { authorizations[endpoint] }
    func setAuthorization(_ value: String?, for endpoint: Endpoint) { authorizations[endpoint] = value }
}
