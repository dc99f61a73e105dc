import TestSupport
import Foundation
import FileIO
import Layers
import OCI
import Testing

/// Serves bytes in small, uneven chunks so libarchive's reads span many calls.
final class ArraySource: ByteSource {
    let bytes: [UInt8]
    var position = 0
    let chunk: Int
    var failAfter: Int?

    init(_ bytes: [UInt8], chunk: Int = 7_777, failAfter: Int? = nil) {
        self.bytes = bytes
        self.chunk = chunk
        self.failAfter = failAfter
    }

    struct Boom: Error, Equatable {}

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if let failAfter, position >= failAfter { throw Boom() }
        let n = min(chunk, buffer.count, bytes.count - position)
        guard n > 0 else { return 0 }
        bytes.withUnsafeBytes { src in
            buffer.baseAddress!.copyMemory(from: src.baseAddress! + position, byteCount: n)
        }
        position += n
        return n
    }
}

/// Lends its bytes (`borrow`) from one buffer that every call scribbles over first, so a
/// reader that used lent bytes after its next call would decode garbage.
final class LendingSource: ByteSource {
    let source: ArraySource
    private let lentBuffer: UnsafeMutableRawBufferPointer

    init(_ bytes: [UInt8], chunk: Int) {
        source = ArraySource(bytes, chunk: chunk)
        lentBuffer = .allocate(byteCount: chunk, alignment: 16)
    }

    deinit { lentBuffer.deallocate() }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        lentBuffer.initializeMemory(as: UInt8.self, repeating: 0xa5)
        return try source.read(into: buffer)
    }

    func borrow(upTo count: Int) throws -> UnsafeRawBufferPointer? {
        lentBuffer.initializeMemory(as: UInt8.self, repeating: 0xa5)
        let n = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: lentBuffer[0..<min(count, lentBuffer.count)]))
        return UnsafeRawBufferPointer(rebasing: lentBuffer[0..<n])
    }
}

private func decompress(_ bytes: [UInt8], _ compression: LayerCompression, chunk: Int = 7_777) throws -> [UInt8] {
    var out: [UInt8] = []
    try LayerDecompressor.run(layer: "sha256:test", compression: compression, source: ArraySource(bytes, chunk: chunk)) { out.append(contentsOf: $0) }
    return out
}

private func compress(_ bytes: [UInt8], _ compression: LayerCompression) throws -> [UInt8] {
    try withTempDir { dir in
        let input = dir + "/in", output = dir + "/out"
        try writeFile(bytes, to: input)
        switch compression {
        case .gzip:
            try run(["python3", "-c", "import gzip,sys; open(sys.argv[2],'wb').write(gzip.compress(open(sys.argv[1],'rb').read()))", input, output])
        case .zstd:
            try run(["zstd", "-q", "-f", "-o", output, input])
        case .none:
            return bytes
        }
        return try readFile(output)
    }
}

@Suite("LayerDecompressor")
struct LayerDecompressorTests {
    static let original = pseudoRandomBytes(300_000) + Array(repeating: 0x41, count: 500_000) + pseudoRandomBytes(1_000, seed: 9)

    @Test("round trips", arguments: [LayerCompression.gzip, .zstd, .none])
    func roundTrip(compression: LayerCompression) throws {
        let compressed = try compress(Self.original, compression)
        if compression != .none { #expect(compressed != Self.original) }
        let out = try decompress(compressed, compression)
        #expect(out.count == Self.original.count)
        #expect(Digest.of(out) == Digest.of(Self.original))
    }

    @Test("a real tar survives", arguments: [LayerCompression.gzip, .zstd])
    func tar(compression: LayerCompression) throws {
        try withTempDir { dir in
            try makeTar([.dir("d"), .file("d/f", pseudoRandomBytes(100_000))], at: dir + "/l.tar")
            let tar = try readFile(dir + "/l.tar")
            #expect(try decompress(try compress(tar, compression), compression, chunk: 1) .count == tar.count)
            #expect(try decompress(try compress(tar, compression), compression) == tar)
        }
    }

    @Test("empty content", arguments: [LayerCompression.gzip, .zstd])
    func empty(compression: LayerCompression) throws {
        #expect(try decompress(try compress([], compression), compression) == [])
    }

    @Test func concatenatedGzipMembers() throws {
        let a = Array("first part|".utf8), b = Array("second part".utf8)
        let joined = try compress(a, .gzip) + compress(b, .gzip)
        #expect(try decompress(joined, .gzip) == a + b)
    }

    /// Compressible text, so the damage lands in entropy-coded data the decoder must reject.
    static let text = Array((0..<40_000).map { "line \($0) of the layer\n" }.joined().utf8)

    @Test("corrupt input throws", arguments: [LayerCompression.gzip, .zstd])
    func corrupt(compression: LayerCompression) throws {
        var bytes = try compress(Self.text, compression)
        let middle = bytes.count / 2
        for i in middle..<middle + 64 { bytes[i] ^= 0xa5 }
        #expect(throws: LayerError.self) { _ = try decompress(bytes, compression) }
    }

    /// Damage that only the trailer's checksum can reveal: a stored (uncompressed) block with
    /// one byte changed still decodes. zstd frames written by the CLI carry a checksum that
    /// libarchive verifies.
    @Test func zstdChecksumMismatchThrows() throws {
        var bytes = try compress(pseudoRandomBytes(100_000), .zstd)
        bytes[bytes.count / 2] ^= 0x01
        #expect(throws: LayerError.self) { _ = try decompress(bytes, .zstd) }
    }

    /// Damage that only the trailer's CRC-32 reveals: ISA-L checks it (libarchive's gzip
    /// filter, used before, did not).
    @Test func gzipChecksumMismatchThrows() throws {
        var bytes = try compress(pseudoRandomBytes(100_000), .gzip)
        bytes[bytes.count / 2] ^= 0x01
        #expect(throws: LayerError.self) { _ = try decompress(bytes, .gzip) }
    }

    @Test func concatenatedGzipMembersFedByteByByte() throws {
        let a = Array("first part|".utf8), b = Self.text
        let joined = try compress(a, .gzip) + compress(b, .gzip)
        #expect(try decompress(joined, .gzip, chunk: 1) == a + b)
    }

    /// Headers with a file name, a comment and extra fields, as `gzip` and other tools write.
    @Test func gzipHeaderWithNameCommentAndExtra() throws {
        let flags: UInt8 = 0x04 | 0x08 | 0x10  // FEXTRA | FNAME | FCOMMENT
        let plain = try compress(Self.text, .gzip)
        var header: [UInt8] = [0x1f, 0x8b, 8, flags, 0, 0, 0, 0, 0, 3]
        header += [4, 0, 0x41, 0x42, 2, 0] + Array("layer.tar".utf8) + [0] + Array("a comment".utf8) + [0]
        for chunk in [7_777, 5, 1] { #expect(try decompress(header + plain.dropFirst(10), .gzip, chunk: chunk) == Self.text, "chunk \(chunk)") }
    }

    @Test func zeroPaddingAfterTheStreamIsIgnored() throws {
        let padded = try compress(Self.text, .gzip) + Array(repeating: 0, count: 10_240)
        #expect(try decompress(padded, .gzip) == Self.text)
    }

    @Test func garbageAfterTheStreamThrows() throws {
        let bytes = try compress(Self.text, .gzip) + Array("not gzip".utf8)
        #expect(throws: LayerError.self) { _ = try decompress(bytes, .gzip) }
    }

    @Test("truncated input throws", arguments: [LayerCompression.gzip, .zstd])
    func truncated(compression: LayerCompression) throws {
        let bytes = try compress(Self.original, compression)
        #expect(throws: LayerError.self) { _ = try decompress(Array(bytes.prefix(bytes.count / 2)), compression) }
    }

    /// libarchive falls back to no filter when the declared one does not bid, so bytes that are
    /// not gzip/zstd at all pass through unchanged (as containerd's DecompressStream does).
    /// Harmless for pulls (diff_id is checked), but the declared media type is not enforced.
    @Test("input that is not compressed at all passes through", arguments: [LayerCompression.gzip, .zstd])
    func notCompressed(compression: LayerCompression) throws {
        let raw = pseudoRandomBytes(4096)
        #expect(try decompress(raw, compression) == raw)
    }

    /// Input lent in place (a ranged download's chunks) instead of copied: members, padding
    /// and headers that straddle what one call lends.
    @Test("gzip input lent by the source", arguments: [1, 5, 7_777, 1 << 20])
    func lentInput(chunk: Int) throws {
        let flags: UInt8 = 0x08  // FNAME
        let named = [0x1f, 0x8b, 8, flags, 0, 0, 0, 0, 0, 3] + Array("layer.tar".utf8) + [0] + (try compress(Self.text, .gzip)).dropFirst(10)
        let streams: [(input: [UInt8], output: [UInt8])] = [
            (try compress(Self.original, .gzip), Self.original),
            (try compress(Array("first part|".utf8), .gzip) + compress(Self.text, .gzip), Array("first part|".utf8) + Self.text),
            (try compress(Self.text, .gzip) + Array(repeating: 0, count: 10_240), Self.text),
            (named, Self.text),
        ]
        for (input, expected) in streams {
            var out: [UInt8] = []
            try LayerDecompressor.run(layer: "l", compression: .gzip, source: LendingSource(input, chunk: chunk)) { out.append(contentsOf: $0) }
            #expect(Digest.of(out) == Digest.of(expected), "chunk \(chunk), \(input.count) bytes in")
        }
        let bytes = try compress(Self.text, .gzip)
        #expect(throws: LayerError.self) {
            try LayerDecompressor.run(layer: "l", compression: .gzip, source: LendingSource(Array(bytes.prefix(bytes.count / 2)), chunk: chunk)) { _ in }
        }
    }

    @Test func sourceErrorsPropagate() throws {
        let bytes = try compress(Self.original, .gzip)
        #expect(throws: ArraySource.Boom()) {
            try LayerDecompressor.run(layer: "l", compression: .gzip, source: ArraySource(bytes, failAfter: 20_000)) { _ in }
        }
    }

    @Test func sinkErrorsPropagate() throws {
        struct Full: Error, Equatable {}
        let bytes = try compress(Self.original, .zstd)
        #expect(throws: Full()) {
            try LayerDecompressor.run(layer: "l", compression: .zstd, source: ArraySource(bytes)) { _ in throw Full() }
        }
    }
}
