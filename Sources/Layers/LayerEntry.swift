/// What an entry is. Whiteouts are kept as their own kinds so merging never parses names again.
public enum EntryKind: UInt8, Sendable, Codable {
    case regular = 0
    case directory = 1
    case symlink = 2
    case hardlink = 3
    case fifo = 4
    case charDevice = 5
    case blockDevice = 6
    case socket = 7
    /// `.wh.NAME`: `path` is the deleted path.
    case whiteout = 8
    /// `.wh..wh..opq`: `path` is the directory whose lower contents are hidden.
    case opaque = 9
}

/// An extended attribute, bytes as stored.
public struct Xattr: Hashable, Sendable {
    public let name: String
    public let value: [UInt8]
    public init(name: String, value: [UInt8]) {
        self.name = name
        self.value = value
    }
}

/// One tar entry of a layer, with where its bytes sit in the layer's uncompressed tar, so the
/// content is served from that file and never copied out.
public struct LayerEntry: Hashable, Sendable {
    /// Normalised, relative, no `.`/`..`, no leading or trailing `/`; "" is the root.
    public var path: String
    public var kind: EntryKind
    /// Permission bits including setuid, setgid and sticky (`& 0o7777`).
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var mtimeSeconds: Int64
    public var mtimeNanoseconds: UInt32
    public var size: Int64
    /// Offset of the content in the uncompressed layer tar (regular files only).
    public var dataOffset: Int64
    /// The content is a file of its own beside the tar (`LayerSplit`), named by `dataOffset`;
    /// the tar holds a hole there.
    public var storedApart: Bool = false
    /// Symlink target as written (never resolved), or the normalised path a hardlink names.
    public var linkTarget: String
    public var deviceMajor: UInt32
    public var deviceMinor: UInt32
    public var xattrs: [Xattr]

    public init(path: String, kind: EntryKind, mode: UInt32 = 0o644, uid: UInt32 = 0, gid: UInt32 = 0,
                mtimeSeconds: Int64 = 0, mtimeNanoseconds: UInt32 = 0, size: Int64 = 0, dataOffset: Int64 = 0,
                linkTarget: String = "", deviceMajor: UInt32 = 0, deviceMinor: UInt32 = 0, xattrs: [Xattr] = []) {
        self.path = path
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtimeSeconds = mtimeSeconds
        self.mtimeNanoseconds = mtimeNanoseconds
        self.size = size
        self.dataOffset = dataOffset
        self.linkTarget = linkTarget
        self.deviceMajor = deviceMajor
        self.deviceMinor = deviceMinor
        self.xattrs = xattrs
    }
}

/// The entries of one layer in tar order.
public struct LayerIndex: Sendable, Equatable {
    public var entries: [LayerEntry]
    public init(entries: [LayerEntry]) { self.entries = entries }
}
