import OCI

/// One live (or once live) imgvol mount, as recorded under `mounts/`.
public struct MountRecord: Codable, Sendable, Equatable {
    public var mountpoint: String
    public var reference: String
    public var digest: Digest
    public var pid: Int32
    public var subpath: String?
    public var started: String

    public init(mountpoint: String, reference: String, digest: Digest, pid: Int32, subpath: String?, started: String) {
        self.mountpoint = mountpoint
        self.reference = reference
        self.digest = digest
        self.pid = pid
        self.subpath = subpath
        self.started = started
    }
}
