/// A trailing CRC-64 over a file imgvol writes itself (a layer index, an image tree): a flipped
/// bit in one is found when it is read, not trusted as a different but valid file.
public enum Sealed {
    public static func seal(_ bytes: [UInt8]) -> [UInt8] {
        let crc = bytes.withUnsafeBytes { ChunkSums.checksum($0) }
        return bytes + withUnsafeBytes(of: crc.littleEndian) { Array($0) }
    }

    /// The body of a file that is sealed when it starts with `magic` (an older, unsealed
    /// version is returned as it is); nil when its seal does not match.
    public static func body(of file: [UInt8], sealedMagic magic: [UInt8]) -> [UInt8]? {
        file.starts(with: magic) ? open(file) : file
    }

    /// The bytes without their seal; nil when the seal is missing or does not match.
    public static func open(_ bytes: [UInt8]) -> [UInt8]? {
        guard bytes.count >= 8 else { return nil }
        let body = bytes.count - 8
        var stored: UInt64 = 0
        for i in 0..<8 { stored |= UInt64(bytes[body + i]) << (8 * i) }
        let crc = bytes.withUnsafeBytes { ChunkSums.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<body])) }
        return crc == stored ? Array(bytes[0..<body]) : nil
    }
}
