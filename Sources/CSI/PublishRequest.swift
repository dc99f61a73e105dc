import CSIProto
import Foundation
import Mounts
import Pull
import Layers
import OCI
import Registry

/// A NodePublishVolume request, checked before anything touches the disk or the network:
/// every field the plugin uses is validated here, so a bad pod spec fails fast with
/// INVALID_ARGUMENT and a message naming the attribute, instead of failing half-way.
struct PublishRequest: Sendable {
    static let knownAttributes: Set<String> = ["image", "pullPolicy", "subPath", "platform", "tlsVerify", "lazy"]
    /// Keys kubelet adds on its own (pod name, namespace, service account tokens, ephemeral
    /// flag). Tokens are secret, so none of these is stored or logged.
    static let kubeletPrefix = "csi.storage.k8s.io/"

    let volumeID: String
    let targetPath: String
    let reference: Reference
    let pullPolicy: PullPolicy
    /// Relative and normalised (no `..`), nil for the whole image.
    let subPath: String?
    let platform: Platform
    let tlsVerify: Bool
    /// `lazy: "true"`: mount before the image has arrived (see `imgvol mount --lazy`).
    let lazy: Bool
    let secrets: RegistrySecrets
    /// `volume_context` without kubelet's keys: what is persisted and compared.
    let attributes: [String: String]
    /// Attribute keys the plugin does not know (logged, not refused: newer manifests may
    /// carry keys for newer plugin versions).
    let unknownAttributes: [String]

    init(_ request: Csi_V1_NodePublishVolumeRequest) throws(CSIError) {
        volumeID = try Self.volumeID(request.volumeID)
        targetPath = try Self.targetPath(request.targetPath)
        try Self.checkCapability(request.hasVolumeCapability ? request.volumeCapability : nil)

        var attributes = request.volumeContext.filter { !$0.key.hasPrefix(Self.kubeletPrefix) }
        for (key, value) in attributes where value.isEmpty && key != "subPath" { attributes[key] = nil }
        self.attributes = attributes
        unknownAttributes = attributes.keys.filter { !Self.knownAttributes.contains($0) }.sorted()

        guard let image = attributes["image"]?.trimmingCharacters(in: .whitespaces), !image.isEmpty else {
            throw .invalidArgument("volume \(volumeID): volume attribute \"image\" is required (an image reference such as registry.example.com/models/llm:v1)")
        }
        do { reference = try Reference(image) } catch {
            throw .invalidArgument("volume \(volumeID): volume attribute \"image\": \(error.description)")
        }
        pullPolicy = try Self.pullPolicy(attributes["pullPolicy"], volumeID: volumeID)
        subPath = try Self.subPath(attributes["subPath"], volumeID: volumeID)
        if let text = attributes["platform"] {
            do { platform = try Platform(parsing: text) } catch {
                throw .invalidArgument("volume \(volumeID): volume attribute \"platform\": \(error.description); use os/arch[/variant], e.g. linux/arm64")
            }
        } else {
            platform = .host
        }
        tlsVerify = try Self.boolean(attributes["tlsVerify"], name: "tlsVerify", default: true, volumeID: volumeID)
        lazy = try Self.boolean(attributes["lazy"], name: "lazy", default: false, volumeID: volumeID)
        secrets = try RegistrySecrets(request.secrets, reference: reference, volumeID: volumeID)
    }

    static func volumeID(_ id: String) throws(CSIError) -> String {
        guard !id.isEmpty else { throw .invalidArgument("volume_id is required") }
        return id
    }

    /// Absolute and lexically clean: the same directory always gets the same text, which is
    /// what mount records and the state file are keyed by.
    static func targetPath(_ path: String) throws(CSIError) -> String {
        guard !path.isEmpty else { throw .invalidArgument("target_path is required") }
        guard path.hasPrefix("/") else { throw .invalidArgument("target_path \"\(path)\" must be an absolute path") }
        let clean = MountTable.absolute(path)
        guard clean != "/" else { throw .invalidArgument("target_path must not be /") }
        return clean
    }

    /// Any mount access mode is accepted: kubelet sends SINGLE_NODE_WRITER for inline
    /// volumes even when the pod mounts them read-only, and the mount is read-only whatever
    /// was asked. Block volumes cannot be served from an image tree.
    static func checkCapability(_ capability: Csi_V1_VolumeCapability?) throws(CSIError) {
        guard let capability else { throw .invalidArgument("volume_capability is required") }
        switch capability.accessType {
        case .mount: return
        case .block: throw .invalidArgument("block access is not supported: imgvol volumes are read-only file systems (use volumeMode: Filesystem)")
        case nil: throw .invalidArgument("volume_capability needs an access type (mount)")
        }
    }

    static func pullPolicy(_ text: String?, volumeID: String) throws(CSIError) -> PullPolicy {
        switch text?.lowercased() {
        case nil, "ifnotpresent": return .missing
        case "always": return .always
        case "never": return .never
        case let other?:
            throw .invalidArgument("volume \(volumeID): volume attribute \"pullPolicy\" is \"\(other)\"; use Always, IfNotPresent or Never")
        }
    }

    static func subPath(_ text: String?, volumeID: String) throws(CSIError) -> String? {
        guard let text, !text.isEmpty else { return nil }
        let clean: String
        do { clean = try TarPath.normalize(text) } catch {
            throw .invalidArgument("volume \(volumeID): volume attribute \"subPath\" \"\(text)\" climbs out of the image; give a directory inside it")
        }
        return clean.isEmpty ? nil : clean
    }

    static func boolean(_ text: String?, name: String, default value: Bool, volumeID: String) throws(CSIError) -> Bool {
        switch text?.lowercased() {
        case nil: return value
        case "true": return true
        case "false": return false
        case let other?:
            throw .invalidArgument("volume \(volumeID): volume attribute \"\(name)\" is \"\(other)\"; use \"true\" or \"false\"")
        }
    }
}
