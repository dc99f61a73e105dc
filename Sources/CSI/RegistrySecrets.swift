import Registry
import OCI

/// Registry credentials from the volume's secret (`nodePublishSecretRef`, or a PV's
/// `csi.nodePublishSecretRef`): a `kubernetes.io/dockerconfigjson` secret, whose
/// `.dockerconfigjson` is auth.json, or an opaque one with `username` and `password`.
/// Never printed: the description is redacted.
enum RegistrySecrets: Sendable, CustomStringConvertible {
    case none
    case basic(Credentials)
    case authJSON([UInt8])

    static let dockerConfigKey = ".dockerconfigjson"

    init(_ secrets: [String: String], reference: Reference, volumeID: String) throws(CSIError) {
        if let username = secrets["username"], !username.isEmpty {
            guard let password = secrets["password"] else {
                throw .invalidArgument("volume \(volumeID): the secret has \"username\" but no \"password\"")
            }
            self = .basic(Credentials(username: username, password: password))
        } else if secrets["password"] != nil {
            throw .invalidArgument("volume \(volumeID): the secret has \"password\" but no \"username\"")
        } else if let json = secrets[Self.dockerConfigKey] {
            let bytes = Array(json.utf8)
            // Parse now, so a malformed secret is the pod spec's error, not a registry's.
            do {
                _ = try AuthFile.credentials(json: bytes, registry: reference.registry, repository: reference.repository,
                                             what: "volume \(volumeID): secret key \(Self.dockerConfigKey)")
            } catch {
                throw .invalidArgument(error.message)
            }
            self = .authJSON(bytes)
        } else {
            self = .none
        }
    }

    /// Applies the credentials to client options. Without a secret the node's own auth
    /// files (the default search path) still apply.
    func apply(to options: inout RegistryClient.Options) {
        switch self {
        case .none: break
        case .basic(let credentials): options.credentials = credentials
        case .authJSON(let bytes): options.authFile = AuthFile(json: bytes, what: "the volume's secret key \(Self.dockerConfigKey)")
        }
    }

    /// `username:password` for `reference`, to hand to a lazy mount's server over a pipe.
    func credentialLine(for reference: Reference) throws(CSIError) -> String? {
        let credentials: Credentials?
        switch self {
        case .none: credentials = nil
        case .basic(let basic): credentials = basic
        case .authJSON(let bytes):
            do {
                credentials = try AuthFile.credentials(json: bytes, registry: reference.registry, repository: reference.repository,
                                                       what: "the volume's secret key \(Self.dockerConfigKey)")
            } catch { throw .invalidArgument(error.message) }
        }
        return credentials.map { "\($0.username):\($0.password)" }
    }

    var description: String {
        switch self {
        case .none: "no secret"
        case .basic(let credentials): "username \(credentials.username)"
        case .authJSON: "secret \(Self.dockerConfigKey)"
        }
    }
}
