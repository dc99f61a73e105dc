import OCI

/// A layer that cannot be read or unpacked safely. Always names the layer, so the user knows
/// which blob of which image is at fault.
public struct LayerError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        /// libarchive could not read it (truncated, not tar, bad compression).
        case malformed
        /// An entry would land outside the image root or write through a symlink.
        case unsafeEntry
        /// A hardlink names a file that is not there.
        case danglingHardlink
        case unsupportedEntry
        case io
    }

    public let kind: Kind
    public let layer: String
    public let detail: String

    public init(_ kind: Kind, layer: String, _ detail: String) {
        self.kind = kind
        self.layer = layer
        self.detail = detail
    }

    public var description: String {
        switch kind {
        case .malformed: "layer \(layer) is not a readable tar archive: \(detail)"
        case .unsafeEntry: "layer \(layer) has an unsafe entry: \(detail)"
        case .danglingHardlink: "layer \(layer) has a hardlink to a missing file: \(detail)"
        case .unsupportedEntry: "layer \(layer) has an unsupported entry: \(detail)"
        case .io: "layer \(layer): \(detail)"
        }
    }
}
