import CFuse
import FileIO
import Layers
import Logging
import Store
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What the FUSE callbacks read: an immutable tree and the open layer tars. Everything is
/// `let`, so the multi-threaded loop needs no lock.
///
/// Inode numbers: FUSE inode = tree index + 1, except that the served root (the image root, or
/// the `--subpath` directory) is always inode 1, as the kernel requires.
public final class FuseFilesystem: Sendable {
    public let tree: ImageTree
    let rootIndex: UInt32
    let layerFDs: [Int32]
    let layers: [LayerData]
    /// For a lazy mount, per layer: what a read waits on until its bytes have arrived (nil
    /// for layers already in the store).
    let gates: [(any LayerGate)?]
    /// Each layer file's size when mounted: a file that fills its layer file from offset 0
    /// may pass through to it.
    let layerSizes: [Int64]
    let passthrough: FusePassthrough?
    /// Files stored apart from their layer tar (`LayerSplit`), opened on first use and kept
    /// open for the mount's life: by tree index.
    private let apartFiles = Mutex<[UInt32: OpenFile]>([:])
    /// Content never changes: the kernel may cache names, attributes and pages for as long as
    /// it likes.
    let timeout: Double = 86400 * 365

    /// Called once the kernel has completed the FUSE handshake: the mount now answers.
    let onInit: @Sendable () -> Void

    /// `passthrough: false` keeps every read in the server (`IMGVOL_FUSE_PASSTHROUGH=0`).
    public init(tree: ImageTree, layers: [LayerData], gates: [(any LayerGate)?] = [], subpathRoot: UInt32 = ImageTree.rootIndex,
                passthrough: Bool = true, logger: Logger? = nil, onInit: @escaping @Sendable () -> Void = {}) {
        self.onInit = onInit
        self.tree = tree
        self.rootIndex = subpathRoot
        self.layers = layers
        self.layerFDs = layers.map(\.file.fd)
        // -1 where the size cannot be read: no file then passes through to it.
        self.layerSizes = layers.map { (try? $0.file.size()) ?? -1 }
        self.gates = gates
        self.passthrough = passthrough ? FusePassthrough(logger: logger) : nil
    }

    /// The file a node stored apart is read from (nil when it cannot be opened).
    func apartFile(_ index: UInt32, _ node: ImageTree.Inode) -> OpenFile? {
        apartFiles.withLock { open in
            if let file = open[index] { return file }
            guard node.layer >= 0, Int(node.layer) < layers.count,
                  let file = try? layers[Int(node.layer)].openApart(offset: node.dataOffset) else { return nil }
            open[index] = file
            return file
        }
    }

    /// The backing file id an open of `node` passes through to, if any: only a file whose
    /// bytes are a whole, complete store file (a lazy layer still arriving never qualifies).
    func backingID(for index: UInt32, _ node: ImageTree.Inode) -> Int32? {
        guard let passthrough, node.kind == .regular, node.layer >= 0, Int(node.layer) < layerFDs.count,
              gate(node.layer) == nil else { return nil }
        if node.storedApart {
            return apartFile(index, node).flatMap { passthrough.backingID(for: $0.fd) }
        }
        guard node.dataOffset == 0, layerSizes[Int(node.layer)] == node.size else { return nil }
        return passthrough.backingID(for: layerFDs[Int(node.layer)])
    }

    /// The gate of layer `number`, if it is still arriving.
    func gate(_ number: Int32) -> (any LayerGate)? {
        Int(number) < gates.count ? gates[Int(number)] : nil
    }

    func index(_ ino: fuse_ino_t) -> UInt32? {
        if ino == UInt64(FUSE_ROOT_ID) { return rootIndex }
        guard ino >= 1, ino - 1 < UInt64(tree.inodes.count) else { return nil }
        return UInt32(ino - 1)
    }

    func ino(_ index: UInt32) -> fuse_ino_t {
        index == rootIndex ? fuse_ino_t(FUSE_ROOT_ID) : fuse_ino_t(index) + 1
    }

    func stat(of index: UInt32) -> stat {
        var st = Glibc.stat()
        guard let node = tree.inode(index) else { return st }
        st.st_ino = UInt(ino(index))
        st.st_mode = mode_t(node.mode & 0o7777) | Self.typeBits(node.kind)
        st.st_nlink = UInt(node.nlink)
        st.st_uid = node.uid
        st.st_gid = node.gid
        st.st_size = Int(node.size)
        st.st_blksize = 65536
        st.st_blocks = Int((node.size + 511) / 512)
        let time = timespec(tv_sec: Int(node.mtimeSeconds), tv_nsec: Int(node.mtimeNanoseconds))
        st.st_mtim = time
        st.st_atim = time
        st.st_ctim = time
        if node.kind == .charDevice || node.kind == .blockDevice {
            st.st_rdev = imgvol_makedev(node.deviceMajor, node.deviceMinor)
        }
        return st
    }

    static func typeBits(_ kind: EntryKind) -> mode_t {
        switch kind {
        case .directory: S_IFDIR
        case .symlink: S_IFLNK
        case .fifo: S_IFIFO
        case .charDevice: S_IFCHR
        case .blockDevice: S_IFBLK
        case .socket: S_IFSOCK
        default: S_IFREG
        }
    }

    func entry(for index: UInt32) -> fuse_entry_param {
        var e = fuse_entry_param()
        e.ino = ino(index)
        e.generation = 1
        e.attr = stat(of: index)
        e.attr_timeout = timeout
        e.entry_timeout = timeout
        return e
    }

    /// The directory's parent as `..` sees it; the served root is its own parent.
    func parent(of index: UInt32) -> UInt32 {
        index == rootIndex ? rootIndex : (tree.inode(index)?.parent ?? rootIndex)
    }
}

/// A layer whose bytes are still arriving (a lazy mount): reads wait for their range.
public protocol LayerGate: Sendable {
    /// Blocks until `[offset, offset + length)` can be read; false when it never will (the
    /// blob failed its digest check or could not be fetched): the read fails with EIO.
    func waitFor(offset: Int64, length: Int) -> Bool
}
