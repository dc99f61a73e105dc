import OCI

/// One live (or once live) imgvol mount, as recorded under `mounts/`.
public struct MountRecord: Codable, Sendable, Equatable {
    public var mountpoint: String
    public var reference: String
    public var digest: Digest
    /// The server serving it now.
    public var pid: Int32
    public var subpath: String?
    /// When this server started serving.
    public var started: String
    /// The keeper holding the mount's /dev/fuse descriptor (nil: a server in the foreground,
    /// which holds it alone).
    public var keeper: Int32?
    /// Servers that served this mount before this one (crashed, killed or upgraded).
    public var restarts: Int?

    public init(mountpoint: String, reference: String, digest: Digest, pid: Int32, subpath: String?, started: String,
                keeper: Int32? = nil, restarts: Int? = nil) {
        self.mountpoint = mountpoint
        self.reference = reference
        self.digest = digest
        self.pid = pid
        self.subpath = subpath
        self.started = started
        self.keeper = keeper
        self.restarts = restarts
    }
}
