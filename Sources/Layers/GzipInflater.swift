import FileIO
import CISAL

/// Decompresses a gzip stream with ISA-L's inflate, which takes a fraction of zlib's CPU time
/// (docs/performance.md has the figures), and checks each member's CRC-32, which
/// libarchive's gzip filter skips.
///
/// Compatible with what registries hold: concatenated members (pigz, some builders) are one
/// stream; zero padding after the last member is ignored; a layer declared gzip that does not
/// start with the gzip magic passes through unchanged, as containerd's decompressor does (the
/// diff_id, checked by the caller, decides whether it is the right tar).
final class GzipInflater {
    static let bufferSize = 1 << 20

    private let layer: String
    /// ISA-L's state (85 KiB, mostly history and decoding tables): owned here, freed in deinit.
    private let state: UnsafeMutablePointer<inflate_state>
    /// A member's header as parsed so far. It must outlive the calls that parse it: when
    /// isal_inflate parses the header itself (crc_flag ISAL_GZIP) it keeps it on its stack,
    /// and a header split across two reads loses its flags.
    private let header: UnsafeMutablePointer<isal_gzip_header>
    private var inHeader = true
    /// Where input is copied to when the source cannot lend it (`ByteSource.borrow`), and at
    /// the start of each member. Input lent by a source is read where it lies: for a 1 GiB
    /// layer fetched over `Range` streams, that is a copy of the whole blob saved.
    private let input: UnsafeMutableRawBufferPointer
    private let output: UnsafeMutableRawBufferPointer
    /// Bytes `[0, filled)` of `input` came from the source; ISA-L reads from `next_in`, which
    /// points there or into bytes the source lent.
    private var filled = 0
    private var atEnd = false

    init(layer: String) {
        self.layer = layer
        state = .allocate(capacity: 1)
        header = .allocate(capacity: 1)
        input = .allocate(byteCount: Self.bufferSize, alignment: 64)
        output = .allocate(byteCount: Self.bufferSize, alignment: 64)
        startMember()
    }

    deinit {
        state.deallocate()
        header.deallocate()
        input.deallocate()
        output.deallocate()
    }

    func run(source: any ByteSource, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        try fill(source, atLeast: 2)
        guard filled > 0 else { return }
        guard Self.startsMember(UnsafeRawBufferPointer(rebasing: input[0..<filled])) else {
            try passThrough(source, sink: sink)
            return
        }
        while true {
            if inHeader {
                try readHeader(source)
                continue
            }
            state.pointee.next_out = output.baseAddress?.assumingMemoryBound(to: UInt8.self)
            state.pointee.avail_out = UInt32(output.count)
            let before = state.pointee.avail_in
            let status = isal_inflate(state)
            let produced = output.count - Int(state.pointee.avail_out)
            guard status >= 0 else { throw malformed(Self.describe(status)) }
            if produced > 0 { try sink(UnsafeRawBufferPointer(rebasing: output[0..<produced])) }

            if state.pointee.block_state == ISAL_BLOCK_FINISH {
                guard try nextMember(source) else { return }
            } else if state.pointee.avail_in == 0, state.pointee.avail_out > 0 {
                // Stopped for want of input.
                try refill(source)
                if state.pointee.avail_in == 0 { throw malformed("the gzip stream ends before its last block (truncated)") }
            } else if produced == 0, state.pointee.avail_in == before {
                throw malformed(Self.describe(status))
            }
        }
    }

    /// After a member's trailer (checked by ISA-L): true when another member follows and
    /// the state is ready for it, false at the end of the stream.
    private func nextMember(_ source: any ByteSource) throws -> Bool {
        if state.pointee.avail_in == 0 { try refill(source) }
        var pending = pendingInput
        if pending.count < 2, !atEnd {
            compact()
            try fill(source, atLeast: 2)
            pending = pendingInput
        }
        if pending.isEmpty { return false }
        if Self.startsMember(pending) {
            let next = state.pointee.next_in, count = state.pointee.avail_in
            startMember()
            state.pointee.next_in = next
            state.pointee.avail_in = count
            return true
        }
        try skipZeroPadding(source, pending)
        return false
    }

    private func skipZeroPadding(_ source: any ByteSource, _ first: UnsafeRawBufferPointer) throws {
        var pending = first
        while true {
            guard pending.allSatisfy({ $0 == 0 }) else {
                throw malformed("bytes that are not gzip follow the end of the gzip stream")
            }
            try refill(source)
            pending = pendingInput
            if pending.isEmpty { return }
        }
    }

    private func startMember() {
        isal_inflate_init(state)
        isal_gzip_header_init(header)
        inHeader = true
    }

    /// Parses (and skips) the member's header, reading more input as it needs.
    private func readHeader(_ source: any ByteSource) throws {
        let status = isal_read_gzip_header(state, header)
        switch status {
        case ISAL_DECOMP_OK:
            inHeader = false
            state.pointee.crc_flag = UInt32(ISAL_GZIP_NO_HDR_VER)
        case ISAL_END_INPUT:
            try refill(source)
            if state.pointee.avail_in == 0 { throw malformed("the gzip stream ends inside a member's header (truncated)") }
        default:
            throw malformed(Self.describe(status))
        }
    }

    private var pendingInput: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: state.pointee.next_in, count: Int(state.pointee.avail_in))
    }

    /// Replaces the consumed input with the next bytes from the source, borrowed if it lends.
    private func refill(_ source: any ByteSource) throws {
        filled = 0
        if let lent = try source.borrow(upTo: Int(UInt32.max)) {
            if lent.isEmpty { atEnd = true }
            state.pointee.next_in = UnsafeMutablePointer(mutating: lent.baseAddress?.assumingMemoryBound(to: UInt8.self))
            state.pointee.avail_in = UInt32(lent.count)
            return
        }
        state.pointee.avail_in = 0
        try fill(source, atLeast: 1)
    }

    /// Moves unconsumed input to the front of the buffer.
    private func compact() {
        let pending = pendingInput
        if let base = input.baseAddress, let from = pending.baseAddress, from != UnsafeRawPointer(base) {
            base.copyMemory(from: from, byteCount: pending.count)
        }
        filled = pending.count
        point()
    }

    /// Appends source bytes until `atLeast` are pending (or the source ends).
    private func fill(_ source: any ByteSource, atLeast: Int) throws {
        while filled < atLeast, filled < input.count, !atEnd {
            let n = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: input[filled...]))
            if n == 0 { atEnd = true } else { filled += n }
        }
        point()
    }

    private func point() {
        state.pointee.next_in = input.baseAddress?.assumingMemoryBound(to: UInt8.self)
        state.pointee.avail_in = UInt32(filled)
    }

    private func passThrough(_ source: any ByteSource, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        try sink(UnsafeRawBufferPointer(rebasing: input[0..<filled]))
        while true {
            let n = try source.read(into: input)
            if n == 0 { return }
            try sink(UnsafeRawBufferPointer(rebasing: input[0..<n]))
        }
    }

    private static func startsMember(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.count >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
    }

    private func malformed(_ detail: String) -> LayerError {
        LayerError(.malformed, layer: layer, "decompressing (gzip): \(detail)")
    }

    private static func describe(_ status: Int32) -> String {
        switch status {
        case ISAL_INVALID_BLOCK: "invalid deflate block"
        case ISAL_INVALID_SYMBOL: "invalid deflate symbol"
        case ISAL_INVALID_LOOKBACK: "invalid back-reference distance"
        case ISAL_INVALID_WRAPPER: "invalid gzip header"
        case ISAL_UNSUPPORTED_METHOD: "the gzip header names a method other than deflate"
        case ISAL_INCORRECT_CHECKSUM: "CRC-32 mismatch in the gzip trailer (corrupt data)"
        default: "ISA-L inflate error \(status)"
        }
    }
}
