/// What a server that takes over a live FUSE session needs from the one before it, which the
/// kernel will not tell it again: the INIT request (the kernel sends it once per mount), whether
/// passthrough was accepted, and the backing file ids registered so far (the kernel wants every
/// open of an inode to pass through to the same registration, and the old server's opens are
/// still open). The tree and its inode numbers need no saving: they are the same on every mount
/// of an image.
public struct FuseSessionState: Codable, Sendable, Equatable {
    /// The kernel's INIT request as read (header and `fuse_init_in`).
    public var initRequest: [UInt8]
    /// Passthrough was accepted in the INIT reply.
    public var passthrough: Bool
    /// A registration failed: files not registered by then are served by the server.
    public var backingFailed = false
    public var backings: [Backing] = []

    /// One store file registered as a backing file.
    public struct Backing: Codable, Sendable, Equatable {
        public var file: BackingKey
        public var id: Int32
    }

    public init(initRequest: [UInt8], passthrough: Bool) {
        self.initRequest = initRequest
        self.passthrough = passthrough
    }
}

/// Names a store file the same way in every server of a mount: its layer, and for a file
/// stored apart its offset in the layer (nil: the layer's data file).
public struct BackingKey: Codable, Sendable, Hashable {
    public var layer: Int32
    public var apart: Int64?
}
