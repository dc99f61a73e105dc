import Foundation

/// A user name and password (or identity token) for one registry. Never printed: its
/// description is redacted so it cannot reach a log by accident.
public struct Credentials: Sendable, Equatable, CustomStringConvertible {
    public let username: String
    public let password: String

    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    /// `--creds user[:password]`, as podman and skopeo take it.
    public init(parsing text: String) throws(RegistryError) {
        guard let colon = text.firstIndex(of: ":") else {
            throw RegistryError(.invalidConfiguration, "--creds needs USERNAME:PASSWORD")
        }
        let user = String(text[..<colon])
        guard !user.isEmpty else { throw RegistryError(.invalidConfiguration, "--creds needs a user name before \":\"") }
        self.init(username: user, password: String(text[text.index(after: colon)...]))
    }

    public var basicAuthorization: String {
        "Basic " + Data("\(username):\(password)".utf8).base64EncodedString()
    }

    public var description: String { "Credentials(\(username):<redacted>)" }
}
