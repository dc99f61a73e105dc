import FileIO
import Foundation

/// containers-auth.json(5) / docker config.json lookup. Files are tried in podman's order and
/// the most specific key wins (`registry/namespace/repo` before `registry`).
public struct AuthFile: Sendable {
    public let paths: [String]

    /// The search order: `--authfile`, `REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
    /// `~/.config/containers/auth.json`, `~/.docker/config.json`.
    public static func searchPaths(explicit: String?, environment: [String: String] = ProcessInfo.processInfo.environment) -> [String] {
        if let explicit { return [explicit] }
        var paths: [String] = []
        if let env = environment["REGISTRY_AUTH_FILE"], !env.isEmpty { paths.append(env) }
        if let runtime = environment["XDG_RUNTIME_DIR"], !runtime.isEmpty { paths.append(runtime + "/containers/auth.json") }
        else { paths.append("/run/containers/\(getuid())/auth.json") }
        let home = environment["HOME"] ?? "/root"
        paths.append((environment["XDG_CONFIG_HOME"] ?? home + "/.config") + "/containers/auth.json")
        paths.append((environment["DOCKER_CONFIG"] ?? home + "/.docker") + "/config.json")
        return paths
    }

    /// auth.json text held in memory (a Kubernetes `.dockerconfigjson` secret), consulted
    /// before `paths`, so each endpoint (origin or mirror) gets only its own credentials.
    public private(set) var inlineJSON: [UInt8]?
    /// Names `inlineJSON` in errors (e.g. "secret .dockerconfigjson").
    public private(set) var inlineName = ""

    public init(paths: [String]) { self.paths = paths }

    public init(json: [UInt8], what: String) {
        self.paths = []
        self.inlineJSON = json
        self.inlineName = what
    }

    private struct Document: Decodable {
        struct Entry: Decodable {
            var auth: String?
            var username: String?
            var password: String?
            var identitytoken: String?
        }
        var auths: [String: Entry]?
    }

    /// An explicit `--authfile` that is missing or unreadable is an error; the default
    /// locations are optional.
    public func credentials(registry: String, repository: String, explicit: Bool) throws(RegistryError) -> Credentials? {
        if let inlineJSON, let creds = try Self.credentials(json: inlineJSON, registry: registry, repository: repository, what: inlineName) {
            return creds
        }
        for path in paths {
            guard FileSystem.exists(path) else {
                if explicit { throw RegistryError(.invalidConfiguration, "auth file \(path) does not exist") }
                continue
            }
            let document: Document
            do {
                document = try JSONDecoder().decode(Document.self, from: Data(try FileSystem.readFile(path)))
            } catch {
                throw RegistryError(.invalidConfiguration, "auth file \(path) is not valid auth.json (expected {\"auths\": {\"REGISTRY\": {\"auth\": \"base64(user:password)\"}}})")
            }
            guard let auths = document.auths else { continue }
            for key in Self.keys(registry: registry, repository: repository) {
                guard let entry = Self.entry(in: auths, key: key) else { continue }
                if let creds = try Self.decode(entry, path: path, key: key) { return creds }
            }
        }
        return nil
    }

    /// An explicitly given `--authfile` is checked before any request, as podman does: a typo in
    /// its path or a broken file must not go unnoticed just because the registry is anonymous.
    public func validate() throws(RegistryError) {
        for path in paths {
            guard FileSystem.exists(path) else {
                throw RegistryError(.invalidConfiguration, "auth file \(path) does not exist; check the --authfile path")
            }
            do {
                _ = try JSONDecoder().decode(Document.self, from: Data(try FileSystem.readFile(path)))
            } catch {
                throw RegistryError(.invalidConfiguration, "auth file \(path) is not valid auth.json (expected {\"auths\": {\"REGISTRY\": {\"auth\": \"base64(user:password)\"}}})")
            }
        }
    }

    static func keys(registry: String, repository: String) -> [String] {
        var keys: [String] = []
        var parts = repository.split(separator: "/").map(String.init)
        while !parts.isEmpty {
            keys.append(registry + "/" + parts.joined(separator: "/"))
            parts.removeLast()
        }
        keys.append(registry)
        if registry == "docker.io" {
            keys += ["https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"]
        }
        return keys
    }

    /// Docker writes keys as URLs (`https://host/v1/`), which name a whole registry; podman
    /// writes `host[/namespace/repo]`, which is compared as it is.
    private static func entry(in auths: [String: Document.Entry], key: String) -> Document.Entry? {
        if let exact = auths[key] { return exact }
        for (name, entry) in auths {
            if name.hasPrefix("https://") || name.hasPrefix("http://") {
                let host = name.split(separator: "/", omittingEmptySubsequences: true).dropFirst().first.map(String.init)
                if host == key { return entry }
            } else if name.hasSuffix("/"), name.trimmingSuffix("/") == key {
                return entry
            }
        }
        return nil
    }

    /// Credentials for `registry`/`repository` from auth.json text held in memory (a
    /// Kubernetes `.dockerconfigjson` secret, which has the same `{"auths": …}` shape), with
    /// the same most-specific-key-first matching as the files. `what` names the source in
    /// errors; the text itself is never quoted, since it holds passwords.
    public static func credentials(json bytes: [UInt8], registry: String, repository: String, what: String) throws(RegistryError) -> Credentials? {
        let document: Document
        do {
            document = try JSONDecoder().decode(Document.self, from: Data(bytes))
        } catch {
            throw RegistryError(.invalidConfiguration, "\(what) is not valid auth.json (expected {\"auths\": {\"REGISTRY\": {\"auth\": \"base64(user:password)\"}}})")
        }
        guard let auths = document.auths else { return nil }
        for key in keys(registry: registry, repository: repository) {
            guard let entry = entry(in: auths, key: key) else { continue }
            if let creds = try decode(entry, path: what, key: key) { return creds }
        }
        return nil
    }

    private static func decode(_ entry: Document.Entry, path: String, key: String) throws(RegistryError) -> Credentials? {
        if let auth = entry.auth, !auth.isEmpty {
            guard let data = Data(base64Encoded: auth), let text = String(data: data, encoding: .utf8),
                  let colon = text.firstIndex(of: ":") else {
                throw RegistryError(.invalidConfiguration, "auth file \(path): entry \"\(key)\" has an \"auth\" that is not base64(user:password)")
            }
            return Credentials(username: String(text[..<colon]), password: String(text[text.index(after: colon)...]))
        }
        if let user = entry.username, let password = entry.password {
            return Credentials(username: user, password: password)
        }
        if let token = entry.identitytoken, !token.isEmpty {
            return Credentials(username: "<token>", password: token)
        }
        return nil
    }
}

extension StringProtocol {
    func trimmingSuffix(_ suffix: Character) -> String {
        var s = Substring(self)
        while s.last == suffix { s = s.dropLast() }
        return String(s)
    }
}
