import CFuse
import CFuseProtocol
import FileIO
import Integrity
import Layers
import Logging
import Store
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What the FUSE callbacks read: an immutable tree and the open layer tars. Everything is
/// `let`, so the multi-threaded loop needs no lock, but for the files opened on first use and
/// what the chunk checkers have seen.
///
/// Every byte is checked against the chunk sums stored with it before it is first served
/// (`ChunkVerifier`); a file passes through to the kernel only once all of it checked good.
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
    /// Per layer, the checker of its data file's chunks (nil for a lazy layer still arriving).
    let verifiers: [ChunkVerifier?]
    /// Files stored apart from their layer tar (`LayerSplit`), opened on first use and kept
    /// open for the mount's life, with their checkers: by tree index.
    private let apartFiles = Mutex<[UInt32: ServedFile]>([:])
    /// Opens served without passthrough and not yet released, by tree index: the kernel fails
    /// a passthrough open of an inode that has such opens.
    private let cachedOpens = Mutex<[UInt32: Int]>([:])
    /// Told once per stored file whose bytes did not match their sums.
    let onDamage: @Sendable (_ layer: Int32, _ damage: ChunkDamage) -> Void
    /// Content never changes: the kernel may cache names, attributes and pages for as long as
    /// it likes.
    let timeout: Double = 86400 * 365

    /// Called once the kernel has completed the FUSE handshake: the mount now answers.
    let onInit: @Sendable () -> Void

    /// `passthrough: false` keeps every read in the server (`IMGVOL_FUSE_PASSTHROUGH=0`), unless
    /// the session being taken over (`restored`) passes files through already: its opens are
    /// still open, and the kernel wants every open of an inode to do as they do. `persist`
    /// keeps the session's state where a successor finds it.
    public init(tree: ImageTree, layers: [LayerData], gates: [(any LayerGate)?] = [], subpathRoot: UInt32 = ImageTree.rootIndex,
                passthrough: Bool = true, logger: Logger? = nil, restored: FuseSessionState? = nil,
                persist: @escaping @Sendable (FuseSessionState) -> Void = { _ in },
                onDamage: @escaping @Sendable (_ layer: Int32, _ damage: ChunkDamage) -> Void = { _, _ in },
                onInit: @escaping @Sendable () -> Void = {}) {
        self.onInit = onInit
        self.onDamage = onDamage
        self.tree = tree
        self.rootIndex = subpathRoot
        self.layers = layers
        self.layerFDs = layers.map(\.file.fd)
        // -1 where the size cannot be read: no file then passes through to it.
        self.layerSizes = layers.map { (try? $0.file.size()) ?? -1 }
        self.gates = gates
        let passes = passthrough || restored?.passthrough == true
        self.passthrough = passes ? FusePassthrough(logger: logger, restored: restored, persist: persist) : nil
        self.restored = restored
        self.persist = persist
        verifiers = layers.indices.map { i in i < gates.count && gates[i] != nil ? nil : layers[i].verifier() }
    }

    /// The state of the session this server took over (nil for the server that mounted).
    let restored: FuseSessionState?
    private let persist: @Sendable (FuseSessionState) -> Void

    /// INIT answered (or replayed, taking over): the session's state is persisted for a
    /// successor, then the mount is announced.
    func initialised() {
        if restored == nil {
            var request = [UInt8](repeating: 0, count: 512)
            let count = request.withUnsafeMutableBytes { imgvol_fuse_init_request($0.baseAddress, $0.count) }
            let state = FuseSessionState(initRequest: Array(request.prefix(count)),
                                         passthrough: passthrough != nil && imgvol_fuse_passthrough_offered() != 0)
            if let passthrough { passthrough.started(state) } else { persist(state) }
        }
        onInit()
    }

    /// A store file a mount reads from, and the checker of its chunks.
    struct ServedFile: Sendable {
        let file: OpenFile
        let verifier: ChunkVerifier?
    }

    /// The file a node stored apart is read from (nil when it cannot be opened).
    func apartFile(_ index: UInt32, _ node: ImageTree.Inode) -> ServedFile? {
        apartFiles.withLock { open in
            if let served = open[index] { return served }
            guard node.layer >= 0, Int(node.layer) < layers.count,
                  let (file, verifier) = try? layers[Int(node.layer)].openApartVerified(offset: node.dataOffset) else { return nil }
            let served = ServedFile(file: file, verifier: verifier)
            open[index] = served
            return served
        }
    }

    /// The store file and offset that hold `node`'s bytes, with its checker.
    func source(_ index: UInt32, _ node: ImageTree.Inode) -> (ServedFile, offset: Int64)? {
        if node.storedApart { return apartFile(index, node).map { ($0, 0) } }
        guard node.layer >= 0, Int(node.layer) < layers.count else { return nil }
        return (ServedFile(file: layers[Int(node.layer)].file, verifier: verifiers[Int(node.layer)]), node.dataOffset)
    }

    /// Checks the chunks under `[offset, offset + length)` of `node` (offsets in the file);
    /// false when the file has a bad chunk anywhere, which is reported the first time.
    func verify(_ index: UInt32, _ node: ImageTree.Inode, offset: Int64, length: Int) -> Bool {
        guard let (served, base) = source(index, node) else { return false }
        guard let verifier = served.verifier else { return true }
        if verifier.isDamaged(offset: base, length: node.size) { return false }
        guard let (damage, newly) = verifier.check(offset: base + offset, length: length) else { return true }
        if newly { onDamage(node.layer, damage) }
        return false
    }

    /// The whole store file `node`'s bytes are, if any, and its name across servers: a file
    /// stored apart, or a layer file it fills from offset 0 (a lazy layer still arriving never
    /// qualifies). Only such a file can pass through to the kernel.
    private func wholeFile(_ index: UInt32, _ node: ImageTree.Inode) -> (ServedFile, BackingKey)? {
        guard passthrough != nil, node.kind == .regular, node.layer >= 0, Int(node.layer) < layers.count,
              gate(node.layer) == nil else { return nil }
        if node.storedApart {
            return apartFile(index, node).map { ($0, BackingKey(layer: node.layer, apart: node.dataOffset)) }
        }
        guard node.dataOffset == 0, layerSizes[Int(node.layer)] == node.size else { return nil }
        return (ServedFile(file: layers[Int(node.layer)].file, verifier: verifiers[Int(node.layer)]), BackingKey(layer: node.layer, apart: nil))
    }

    /// Before a file can pass through, all of it is checked (once per mount): the kernel will
    /// read it without the server. Checked here, when first opened, rather than read by read
    /// through the server: a model is read whole anyway, and a read through FUSE's own page
    /// cache runs at half the speed of one passed through. A file that passes through already
    /// (registered by the server this one took over from) was checked then. False when it is
    /// damaged (the damage is reported): the open fails.
    func checkBeforePassthrough(_ index: UInt32, _ node: ImageTree.Inode) -> Bool {
        guard let (served, key) = wholeFile(index, node), let verifier = served.verifier, !verifier.isVerified,
              passthrough?.isRegistered(key) != true else { return true }
        guard let (damage, newly) = verifier.checkAll() else { return true }
        if newly { onDamage(node.layer, damage) }
        return false
    }

    /// The backing file id an open of `node` passes through to, if any: only a file whose
    /// bytes are a whole, complete store file (a lazy layer still arriving never qualifies),
    /// every chunk of it checked good, and no open of it served by the server still open.
    /// Otherwise the open is counted as served (until `released`).
    func openBacking(for index: UInt32, _ node: ImageTree.Inode) -> Int32? {
        cachedOpens.withLock { opens in
            if opens[index, default: 0] == 0, let id = passthroughCandidate(index, node) { return id }
            opens[index, default: 0] += 1
            return nil
        }
    }

    /// An open served by the server was released. (An open served by a server this one took
    /// over from is not counted: while passthrough works, every open of a whole store file
    /// passes through, so such opens are of files that never pass through.)
    func released(_ index: UInt32) {
        cachedOpens.withLock { opens in
            guard let count = opens[index] else { return }
            opens[index] = count > 1 ? count - 1 : nil
        }
    }

    private func passthroughCandidate(_ index: UInt32, _ node: ImageTree.Inode) -> Int32? {
        guard let passthrough, let (served, key) = wholeFile(index, node),
              served.verifier?.isVerified ?? true || passthrough.isRegistered(key) else { return nil }
        return passthrough.backingID(for: key, fd: served.file.fd)
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
