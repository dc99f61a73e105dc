import FileIO
import Foundation
import OCI
import TOMLKit

/// containers-registries.conf(5), version 2: where a reference is really pulled from. Mirrors
/// are tried in order before the origin, which is how pull-through caches and P2P engines
/// (Spegel, Dragonfly) plug in without touching image names.
public struct RegistriesConf: Sendable, Equatable {
    public struct Mirror: Codable, Sendable, Equatable {
        public var location: String
        public var insecure: Bool?
        /// "all" (default), "digest-only" or "tag-only".
        public var pullFromMirror: String?

        enum CodingKeys: String, CodingKey {
            case location, insecure
            case pullFromMirror = "pull-from-mirror"
        }
    }

    public struct Registry: Codable, Sendable, Equatable {
        public var prefix: String?
        public var location: String?
        public var insecure: Bool?
        public var blocked: Bool?
        public var mirror: [Mirror]?
        /// Older spelling of `pull-from-mirror = "digest-only"` for every mirror.
        public var mirrorByDigestOnly: Bool?

        enum CodingKeys: String, CodingKey {
            case prefix, location, insecure, blocked, mirror
            case mirrorByDigestOnly = "mirror-by-digest-only"
        }
    }

    private struct Document: Codable {
        var registry: [Registry]?
    }

    public var registries: [Registry]

    public init(registries: [Registry] = []) { self.registries = registries }

    public init(toml: String, path: String) throws(RegistryError) {
        if let found = TOMLPrecheck.firstProblem(in: toml) {
            throw RegistryError(.invalidConfiguration, "registries.conf \(path) is not valid TOML: line \(found.line), column \(found.column): \(found.problem); fix the file")
        }
        do {
            registries = try TOMLDecoder().decode(Document.self, from: toml).registry ?? []
        } catch let error as DecodingError {
            throw RegistryError(.invalidConfiguration, "registries.conf \(path): \(Self.explain(error))")
        } catch {
            throw RegistryError(.invalidConfiguration, "registries.conf \(path) is not valid TOML: \(error)")
        }
        for r in registries where (r.prefix ?? r.location ?? "").isEmpty {
            throw RegistryError(.invalidConfiguration, "registries.conf \(path): a [[registry]] needs a prefix or a location")
        }
    }

    /// Which key holds what, and what was expected there, in TOML's words: Swift's
    /// `DecodingError` text names Swift types and says "not found" for a key of the wrong type
    /// (TOMLKit reports a mismatch that way).
    static func explain(_ error: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            var text = ""
            for key in keys {
                if let index = key.intValue { text += "[\(index)]" } else { text += (text.isEmpty ? "" : ".") + key.stringValue }
            }
            return text
        }
        /// The Swift type TOMLKit says it wanted (`A "Bool" does not exist…`, `Expected a TOMLArray…`).
        func wanted(_ description: String) -> String? {
            for marker in ["A \"", "Expected a "] {
                guard let start = description.range(of: marker)?.upperBound else { continue }
                let rest = description[start...]
                return String(rest.prefix { $0 != "\"" && $0 != " " })
            }
            return nil
        }
        func toml(_ swiftType: String) -> String {
            switch swiftType {
            case "Bool": "a boolean (true or false)"
            case "String": "a string in quotes"
            case "Int", "Int64", "Double": "a number"
            case "TOMLArray", "Array": "an array (for tables: [[registry]] or [[registry.mirror]])"
            case "TOMLTable", "Dictionary": "a table"
            default: "a \(swiftType)"
            }
        }
        switch error {
        case .keyNotFound(let key, let context):
            // TOMLKit's path already ends with the key; Foundation's does not.
            let keys = context.codingPath.last?.stringValue == key.stringValue ? context.codingPath : context.codingPath + [key]
            let at = path(keys)
            if let type = wanted(context.debugDescription) { return "key \(at) must be \(toml(type))" }
            return "key \(at) is missing"
        case .typeMismatch(let type, let context):
            let found = context.debugDescription.range(of: "found ").map { " (found " + context.debugDescription[$0.upperBound...].replacingOccurrences(of: " instead", with: "").trimmingSuffix(".") + ")" } ?? ""
            let at = path(context.codingPath)
            return "key \(at.isEmpty ? "(top level)" : at) must be \(toml(wanted(context.debugDescription) ?? String(describing: type)))\(found)"
        case .valueNotFound(let type, let context):
            return "key \(path(context.codingPath)) must be \(toml(String(describing: type)))"
        case .dataCorrupted(let context):
            return "key \(path(context.codingPath)): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }

    /// `--registries-conf`, else `CONTAINERS_REGISTRIES_CONF`, else /etc/containers/registries.conf
    /// (an absent default file means no rewriting).
    public static func load(explicit: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws(RegistryError) -> RegistriesConf {
        let path = explicit ?? environment["CONTAINERS_REGISTRIES_CONF"] ?? "/etc/containers/registries.conf"
        guard FileSystem.exists(path) else {
            if explicit != nil || environment["CONTAINERS_REGISTRIES_CONF"] != nil {
                throw RegistryError(.invalidConfiguration, "registries.conf \(path) does not exist")
            }
            return RegistriesConf()
        }
        let text: String
        do { text = String(decoding: try FileSystem.readFile(path), as: UTF8.self) } catch {
            throw RegistryError(.invalidConfiguration, "cannot read registries.conf \(path): \(error)")
        }
        return try RegistriesConf(toml: text, path: path)
    }

    /// The [[registry]] whose prefix matches `name` (registry/repository) at a path boundary,
    /// the longest such prefix winning.
    public func match(_ name: String) -> Registry? {
        var best: (Registry, Int)?
        for r in registries {
            guard let prefix = r.prefix ?? r.location, Self.prefix(prefix, matches: name) else { continue }
            if best == nil || prefix.count > best?.1 ?? 0 { best = (r, prefix.count) }
        }
        return best?.0
    }

    static func prefix(_ prefix: String, matches name: String) -> Bool {
        if prefix.hasPrefix("*.") {
            let host = name.split(separator: "/").first.map(String.init) ?? name
            return host.hasSuffix(String(prefix.dropFirst(1)))
        }
        guard name.hasPrefix(prefix) else { return false }
        let rest = name.dropFirst(prefix.count)
        return rest.isEmpty || rest.first == "/" || prefix.hasSuffix("/")
    }

    /// Where to fetch `reference` from, in order: mirrors, then the (possibly rewritten) origin.
    public func endpoints(for reference: Reference, tlsVerify: Bool) throws(RegistryError) -> [Endpoint] {
        let name = reference.name
        guard let entry = match(name) else {
            return [Endpoint(registry: reference.registry, repository: reference.repository, insecure: !tlsVerify, isMirror: false)]
        }
        if entry.blocked == true {
            throw RegistryError(.blocked, "pulling \(reference) is blocked by registries.conf (prefix \"\(entry.prefix ?? entry.location ?? "")\")")
        }
        let prefix = entry.prefix ?? entry.location ?? ""
        func rewrite(_ location: String) -> (String, String) {
            let suffix = prefix.hasPrefix("*.") ? "/" + reference.repository : String(name.dropFirst(prefix.count))
            let full = location + suffix
            let host = full.split(separator: "/", maxSplits: 1).first.map(String.init) ?? full
            let repo = full.split(separator: "/", maxSplits: 1).dropFirst().first.map(String.init) ?? reference.repository
            return (host, repo)
        }
        var result: [Endpoint] = []
        for mirror in entry.mirror ?? [] {
            let policy = mirror.pullFromMirror ?? (entry.mirrorByDigestOnly == true ? "digest-only" : "all")
            if policy == "digest-only" && reference.digest == nil { continue }
            if policy == "tag-only" && reference.digest != nil { continue }
            let (host, repo) = rewrite(mirror.location)
            result.append(Endpoint(registry: host, repository: repo, insecure: !tlsVerify || mirror.insecure == true, isMirror: true))
        }
        // A wildcard prefix without a location keeps the reference's own registry.
        let (host, repo) = entry.location.map(rewrite) ?? (prefix.hasPrefix("*.") ? (reference.registry, reference.repository) : rewrite(prefix))
        result.append(Endpoint(registry: host, repository: repo, insecure: !tlsVerify || entry.insecure == true, isMirror: false))
        return result
    }
}

/// One place to fetch a repository from.
public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
    public var registry: String
    public var repository: String
    /// Plain HTTP or unverified TLS allowed (`--tls-verify=false`, `insecure = true`).
    public var insecure: Bool
    public var isMirror: Bool

    /// docker.io's API lives on another host.
    public var apiHost: String { registry == "docker.io" ? "registry-1.docker.io" : registry }

    public var description: String { "\(registry)/\(repository)" }
}
