import Integrity

/// The on-disk form of a layer index (`layers/<diff_id>.idx`), sealed with a CRC-64.
extension LayerIndex {
    static let magic: [UInt8] = Array("IMGVOL-LAYER-INDEX-3\n".utf8)
    /// Version 2 had no seal; still read, as an older imgvol wrote it.
    static let magicV2: [UInt8] = Array("IMGVOL-LAYER-INDEX-2\n".utf8)
    /// Version 1 had no flags byte: nothing was stored apart.
    static let magicV1: [UInt8] = Array("IMGVOL-LAYER-INDEX-1\n".utf8)

    public struct DecodingError: Error, CustomStringConvertible {
        public let reason: String
        public var description: String { "layer index is damaged: \(reason)" }
    }

    public func encoded() -> [UInt8] {
        // Fixed fields plus a typical path: one allocation for most indexes.
        var w = BinaryWriter(capacity: Self.magic.count + 8 + entries.count * 128)
        for b in Self.magic { w.u8(b) }
        w.u64(UInt64(entries.count))
        for e in entries {
            w.string(e.path)
            w.u8(e.kind.rawValue)
            w.u32(e.mode)
            w.u32(e.uid)
            w.u32(e.gid)
            w.i64(e.mtimeSeconds)
            w.u32(e.mtimeNanoseconds)
            w.i64(e.size)
            w.i64(e.dataOffset)
            w.u8(e.storedApart ? 1 : 0)
            w.string(e.linkTarget)
            w.u32(e.deviceMajor)
            w.u32(e.deviceMinor)
            w.xattrs(e.xattrs)
        }
        return Sealed.seal(w.bytes)
    }

    public init(decoding file: [UInt8]) throws(DecodingError) {
        guard let bytes = Sealed.body(of: file, sealedMagic: Self.magic) else { throw DecodingError(reason: "its checksum does not match") }
        let hasFlags = bytes.starts(with: Self.magic) || bytes.starts(with: Self.magicV2)
        guard hasFlags || bytes.starts(with: Self.magicV1) else { throw DecodingError(reason: "wrong magic") }
        var r = BinaryReader(Array(bytes.dropFirst(Self.magic.count)))
        do {
            let count = try r.u64()
            // Each entry takes at least 60 bytes: a count larger than that is damage, and must
            // not turn into a huge allocation.
            guard count <= UInt64(bytes.count / 60) else { throw DecodingError(reason: "entry count \(count) does not fit the file") }
            var entries: [LayerEntry] = []
            entries.reserveCapacity(Int(count))
            for _ in 0..<count {
                let path = try r.string()
                guard let kind = EntryKind(rawValue: try r.u8()) else { throw DecodingError(reason: "unknown entry kind") }
                var e = LayerEntry(path: path, kind: kind)
                e.mode = try r.u32()
                e.uid = try r.u32()
                e.gid = try r.u32()
                e.mtimeSeconds = try r.i64()
                e.mtimeNanoseconds = try r.u32()
                e.size = try r.i64()
                e.dataOffset = try r.i64()
                if hasFlags { e.storedApart = try r.u8() & 1 != 0 }
                e.linkTarget = try r.string()
                e.deviceMajor = try r.u32()
                e.deviceMinor = try r.u32()
                e.xattrs = try r.xattrs()
                entries.append(e)
            }
            guard r.isAtEnd else { throw DecodingError(reason: "trailing bytes") }
            self.init(entries: entries)
        } catch let error as DecodingError {
            throw error
        } catch {
            throw DecodingError(reason: "truncated")
        }
    }
}
