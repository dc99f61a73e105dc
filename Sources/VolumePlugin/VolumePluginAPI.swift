/// The Docker/podman volume plugin protocol (JSON over HTTP POST on a unix socket), as podman
/// speaks it to drivers registered in containers.conf `[engine.volume_plugins]`.
enum VolumePluginAPI {
    static let contentType = "application/vnd.docker.plugins.v1.2+json"

    struct NameRequest: Decodable {
        var Name: String
        var Opts: [String: String]?
        var ID: String?
    }

    struct ErrorResponse: Encodable { var Err: String }

    struct MountResponse: Encodable {
        var Mountpoint: String
        var Err: String = ""
    }

    struct Volume: Encodable {
        var Name: String
        var Mountpoint: String
        var Status: [String: String]
    }

    struct GetResponse: Encodable {
        var Volume: Volume
        var Err: String = ""
    }

    struct ListResponse: Encodable {
        var Volumes: [Volume]
        var Err: String = ""
    }

    struct Capabilities: Encodable {
        struct Scope: Encodable { var Scope = "local" }
        var Capabilities = Scope()
    }

    struct Activate: Encodable { var Implements = ["VolumeDriver"] }
}
