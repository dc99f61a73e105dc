/// An image reference `[registry[:port]/]repository[:tag][@digest]`, normalised the way docker
/// and podman do it, so `alpine` and `docker.io/library/alpine:latest` are the same image.
public struct Reference: Hashable, Sendable, CustomStringConvertible, Codable {
    public static let defaultRegistry = "docker.io"
    public static let defaultTag = "latest"

    /// Registry host with optional port, as written (`docker.io`, `127.0.0.1:5000`).
    public let registry: String
    /// Repository path inside the registry (`library/alpine`).
    public let repository: String
    public let tag: String?
    public let digest: Digest?

    public init(registry: String, repository: String, tag: String?, digest: Digest?) {
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    public init(_ text: String) throws(OCIError) {
        func fail(_ reason: String) -> OCIError { OCIError(.invalidReference, text, reason) }
        guard !text.isEmpty else { throw fail("it is empty") }
        guard text.utf8.count <= 4096, !text.contains(where: { $0.isWhitespace }) else {
            throw fail("it contains white space or is too long")
        }
        var rest = Substring(text)
        var digest: Digest?
        if let at = rest.firstIndex(of: "@") {
            do { digest = try Digest(String(rest[rest.index(after: at)...])) } catch {
                throw fail("the part after \"@\" is not a digest (\(error.reason))")
            }
            rest = rest[..<at]
        }
        var tag: String?
        if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
            let candidate = String(rest[rest.index(after: colon)...])
            guard Self.isValidTag(candidate) else {
                throw fail("tag \"\(candidate)\" must be 1-128 characters of [A-Za-z0-9_.-], not starting with \".\" or \"-\"")
            }
            tag = candidate
            rest = rest[..<colon]
        }
        var components = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        var registry = Self.defaultRegistry
        if components.count > 1, let first = components.first, Self.looksLikeRegistry(first) {
            guard Self.isValidRegistry(first) else { throw fail("registry \"\(first)\" is not a valid host[:port]") }
            registry = first
            components.removeFirst()
        }
        guard !components.isEmpty, components.allSatisfy({ Self.isValidPathComponent($0) }) else {
            throw fail("repository names are lower-case letters, digits and separators (\".\", \"_\", \"__\", \"-\") between \"/\"")
        }
        if registry == "index.docker.io" || registry == "registry-1.docker.io" { registry = Self.defaultRegistry }
        if registry == Self.defaultRegistry && components.count == 1 { components.insert("library", at: 0) }
        let repository = components.joined(separator: "/")
        guard registry.utf8.count + 1 + repository.utf8.count <= 255 else { throw fail("the name is longer than 255 characters") }
        self.init(registry: registry, repository: repository, tag: tag ?? (digest == nil ? Self.defaultTag : nil), digest: digest)
    }

    /// `registry/repository` without tag or digest.
    public var name: String { "\(registry)/\(repository)" }

    public var description: String {
        var s = name
        if let tag { s += ":\(tag)" }
        if let digest { s += "@\(digest)" }
        return s
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    public var manifestReference: String { digest?.description ?? tag ?? Self.defaultTag }

    public func withDigest(_ digest: Digest) -> Reference {
        Reference(registry: registry, repository: repository, tag: tag, digest: digest)
    }

    public func withRegistry(_ registry: String, repository: String) -> Reference {
        Reference(registry: registry, repository: repository, tag: tag, digest: digest)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        do { try self.init(text) } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    static func looksLikeRegistry(_ s: String) -> Bool {
        s.contains(".") || s.contains(":") || s == "localhost" || s.contains(where: { $0.isUppercase })
    }

    static func isValidRegistry(_ s: String) -> Bool {
        var host = Substring(s)
        if let colon = s.lastIndex(of: ":"), !s.hasPrefix("[") || s[..<colon].hasSuffix("]") {
            let port = s[s.index(after: colon)...]
            guard !port.isEmpty, port.count <= 5, port.allSatisfy(\.isASCII), port.allSatisfy(\.isNumber),
                  let n = Int(port), n > 0, n < 65536 else { return false }
            host = s[..<colon]
        }
        if host.hasPrefix("[") && host.hasSuffix("]") {
            return host.dropFirst().dropLast().allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
        }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        return !labels.isEmpty && labels.allSatisfy { label in
            !label.isEmpty && label.count <= 63 && label.first != "-" && label.last != "-"
                && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        }
    }

    /// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
    static func isValidPathComponent(_ s: String) -> Bool {
        let bytes = Array(s.utf8)
        guard let first = bytes.first, let last = bytes.last, isAlnum(first), isAlnum(last) else { return false }
        var i = 0
        while i < bytes.count {
            let c = bytes[i]
            if isAlnum(c) { i += 1; continue }
            var j = i
            while j < bytes.count, !isAlnum(bytes[j]) { j += 1 }
            let sep = bytes[i..<j]
            let ok = sep.elementsEqual([0x2e]) || sep.elementsEqual([0x5f]) || sep.elementsEqual([0x5f, 0x5f])
                || sep.allSatisfy { $0 == 0x2d }
            guard ok else { return false }
            i = j
        }
        return true
    }

    static func isAlnum(_ c: UInt8) -> Bool { (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) }

    static func isValidTag(_ s: String) -> Bool {
        let bytes = Array(s.utf8)
        guard !bytes.isEmpty, bytes.count <= 128, bytes[0] != 0x2e, bytes[0] != 0x2d else { return false }
        return bytes.allSatisfy { c in
            (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c == 0x5f || c == 0x2e || c == 0x2d
        }
    }
}
