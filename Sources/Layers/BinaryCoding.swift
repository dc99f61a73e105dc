/// Little-endian writer/reader for imgvol's own index files: compact, and fast to load when a
/// mount starts (a JSON index of 20,000 entries would cost more than the whole mount budget).
public struct BinaryWriter {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u32(_ v: UInt32) { append(v.littleEndian) }
    public mutating func u64(_ v: UInt64) { append(v.littleEndian) }
    public mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    public mutating func data(_ v: [UInt8]) {
        u32(UInt32(v.count))
        v.withUnsafeBufferPointer { bytes.append(contentsOf: $0) }
    }
    public mutating func string(_ v: String) {
        var v = v
        v.withUTF8 { utf8 in
            u32(UInt32(utf8.count))
            bytes.append(contentsOf: utf8)
        }
    }

    /// Through a typed buffer: appending a raw buffer took Array's unspecialised generic path,
    /// most of the 20 ms that encoding a 25,000-inode tree took at the end of a pull.
    private mutating func append<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v) { bytes.append(contentsOf: $0.assumingMemoryBound(to: UInt8.self)) }
    }

    /// Extended attributes, as both the layer index and the image tree store them.
    public mutating func xattrs(_ v: [Xattr]) {
        u32(UInt32(v.count))
        for x in v {
            string(x.name)
            data(x.value)
        }
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
