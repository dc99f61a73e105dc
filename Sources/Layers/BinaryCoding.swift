/// Little-endian writer/reader for imgvol's own index files: compact, and fast to load when a
/// mount starts (a JSON index of 20,000 entries would cost more than the whole mount budget).
///
/// The writer fills a growing buffer it owns (noncopyable: one owner of the memory), each
/// field stored through a raw cursor. Appending each one to an Array (a uniqueness and a
/// capacity check, then a generic copy, for every 4 or 8 bytes) was most of the time that
/// encoding a 25,000-inode tree took at the end of a pull.
public struct BinaryWriter: ~Copyable {
    private var base: UnsafeMutableRawPointer
    private var capacity: Int
    private var count = 0

    public init(capacity: Int = 0) {
        self.capacity = max(capacity, 256)
        base = .allocate(byteCount: self.capacity, alignment: 8)
    }

    deinit { base.deallocate() }

    /// What has been written.
    public var bytes: [UInt8] { Array(UnsafeRawBufferPointer(start: base, count: count)) }

    public mutating func u8(_ v: UInt8) { store(v) }
    public mutating func u32(_ v: UInt32) { store(v.littleEndian) }
    public mutating func u64(_ v: UInt64) { store(v.littleEndian) }
    public mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }

    public mutating func data(_ v: [UInt8]) {
        u32(UInt32(v.count))
        v.withUnsafeBytes { raw($0) }
    }

    public mutating func string(_ v: String) {
        if let done: Void = v.utf8.withContiguousStorageIfAvailable({ utf8 in
            u32(UInt32(utf8.count))
            raw(UnsafeRawBufferPointer(utf8))
        }) { return done }
        data(Array(v.utf8))
    }

    /// Extended attributes, as both the layer index and the image tree store them.
    public mutating func xattrs(_ v: [Xattr]) {
        u32(UInt32(v.count))
        for x in v {
            string(x.name)
            data(x.value)
        }
    }

    private mutating func store<T: FixedWidthInteger>(_ v: T) {
        reserve(MemoryLayout<T>.size)
        base.storeBytes(of: v, toByteOffset: count, as: T.self)
        count += MemoryLayout<T>.size
    }

    private mutating func raw(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        reserve(bytes.count)
        (base + count).copyMemory(from: source, byteCount: bytes.count)
        count += bytes.count
    }

    private mutating func reserve(_ more: Int) {
        guard count + more > capacity else { return }
        let grown = max(capacity * 2, count + more)
        let moved = UnsafeMutableRawPointer.allocate(byteCount: grown, alignment: 8)
        moved.copyMemory(from: base, byteCount: count)
        base.deallocate()
        base = moved
        capacity = grown
    }
}

public struct BinaryReader {
    public struct Truncated: Error {}

    private let bytes: [UInt8]
    private var position = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var isAtEnd: Bool { position == bytes.count }

    mutating func take(_ n: Int) throws(Truncated) -> ArraySlice<UInt8> {
        guard n >= 0, bytes.count - position >= n else { throw Truncated() }
        defer { position += n }
        return bytes[position..<position + n]
    }

    public mutating func u8() throws(Truncated) -> UInt8 { try take(1).first ?? 0 }

    public mutating func u32() throws(Truncated) -> UInt32 { try load(UInt32.self) }
    public mutating func u64() throws(Truncated) -> UInt64 { try load(UInt64.self) }

    /// Mount start-up decodes tens of thousands of entries: read integers in place.
    private mutating func load<T: FixedWidthInteger>(_: T.Type) throws(Truncated) -> T {
        let size = MemoryLayout<T>.size
        guard bytes.count - position >= size else { throw Truncated() }
        let value = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: position, as: T.self) }
        position += size
        return T(littleEndian: value)
    }

    public mutating func i64() throws(Truncated) -> Int64 { Int64(bitPattern: try u64()) }
    public mutating func data() throws(Truncated) -> [UInt8] { Array(try take(Int(try u32()))) }

    public mutating func xattrs() throws(Truncated) -> [Xattr] {
        let count = try u32()
        var result: [Xattr] = []
        for _ in 0..<count { result.append(Xattr(name: try string(), value: try data())) }
        return result
    }
    public mutating func string() throws(Truncated) -> String {
        let count = Int(try u32())
        guard count >= 0, bytes.count - position >= count else { throw Truncated() }
        defer { position += count }
        return bytes.withUnsafeBufferPointer { String(decoding: UnsafeBufferPointer(rebasing: $0[position..<position + count]), as: UTF8.self) }
    }
}
