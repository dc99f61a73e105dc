// Target `gzip`: `GzipInflater` (Layers/GzipInflater.swift, ISA-L inflate, CRC-32 checked,
// concatenated members, zero padding, pass-through of non-gzip). The first byte chooses how the
// stream is cut into reads; the rest is the stream.
// Property: read whole, read in small pieces, and lent in pieces (`borrow`), the stream gives the
// same result: the same bytes, or an error each time.
import FileIO
@testable import Layers

/// Output beyond this is cut short (a gzip bomb is not what this looks for).
let outputLimit = 64 << 20
struct TooMuch: Error {}

final class Pieces: ByteSource {
    let bytes: [UInt8]
    let cuts: [Int]
    let lends: Bool
    var position = 0
    var turn = 0
    init(_ bytes: [UInt8], cuts: [Int], lends: Bool) { self.bytes = bytes; self.cuts = cuts; self.lends = lends }

    private func next(_ limit: Int) -> Range<Int> {
        let want = cuts.isEmpty ? limit : max(1, cuts[turn % cuts.count])
        turn += 1
        let n = min(want, limit, bytes.count - position)
        defer { position += n }
        return position..<position + n
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let range = next(buffer.count)
        bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[range])) }
        return range.count
    }

    func borrow(upTo count: Int) throws -> UnsafeRawBufferPointer? {
        guard lends else { return nil }
        let range = next(count)
        // Lent memory stays valid until the next call: `bytes` lives as long as the source.
        return bytes.withUnsafeBytes { UnsafeRawBufferPointer(rebasing: $0[range]) }
    }
}

func inflate(_ stream: [UInt8], cuts: [Int], lends: Bool) -> Fingerprint? {
    var out = Fingerprint()
    do {
        try GzipInflater(layer: "fuzz").run(source: Pieces(stream, cuts: cuts, lends: lends)) { bytes in
            out.add(bytes)
            if out.count > outputLimit { throw TooMuch() }
        }
    } catch is TooMuch {
        return Fingerprint(hash: 0, count: -1)
    } catch {
        _ = "\(error)"
        return nil
    }
    return out
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGzip(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = bytes(data, size)
    guard let first = input.first else { return 0 }
    let stream = Array(input.dropFirst())
    let cuts = [[1], [2, 3], [7, 1, 13], [10, 64, 1], [512, 3], [1 << 20]][Int(first) % 6]
    let whole = inflate(stream, cuts: [], lends: false)
    let read = inflate(stream, cuts: cuts, lends: false)
    let lent = inflate(stream, cuts: cuts, lends: true)
    let bomb = [whole, read, lent].contains { $0?.count == -1 }
    if !bomb, whole != read || whole != lent {
        violated("whole \(String(describing: whole)), read in pieces \(String(describing: read)), lent in pieces \(String(describing: lent))")
    }
    return 0
}
