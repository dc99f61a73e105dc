import FileIO
import Foundation
import OCI
import Registry
import Synchronization
import Testing
@testable import Transfer

/// Bytes served from memory in place of a registry: the test decides what each request sees.
final class MemorySource: RangeSource {
    let bytes: [UInt8]
    /// Requests fail from this offset on.
    let failAt: Int64?
    /// For each request, the chunk it starts at and what the test's reader had consumed then.
    let requests = Mutex<[(chunk: Int, consumed: Int)]>([])
    let consumed = Atomic<Int>(0)
    let chunkSize: Int64

    init(_ bytes: [UInt8], chunkSize: Int64, failAt: Int64? = nil) {
        self.bytes = bytes
        self.chunkSize = chunkSize
        self.failAt = failAt
    }

    struct Dropped: Error {}

    func readRange(_ descriptor: Descriptor, _ range: Range<Int64>, from endpoints: [Endpoint], reference: Reference,
                   _ body: (UnsafeRawBufferPointer, Int64) throws -> Void) async throws {
        let chunk = Int(range.lowerBound / chunkSize)
        let seen = consumed.load(ordering: .acquiring)
        requests.withLock { $0.append((chunk, seen)) }
        if let failAt, range.upperBound > failAt { throw Dropped() }
        try bytes[Int(range.lowerBound)..<Int(range.upperBound)].withUnsafeBytes { try body($0, range.lowerBound) }
    }
}

func descriptor(of bytes: [UInt8]) -> Descriptor {
    Descriptor(mediaType: "application/octet-stream", digest: Digest.of(bytes), size: Int64(bytes.count))
}

func pseudoRandom(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed | 1
    return (0..<count).map { _ in
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return UInt8(truncatingIfNeeded: state)
    }
}

let reference = try! Reference("127.0.0.1:1/test/blob:1")

func withTempDir<T>(_ body: (String) throws -> T) throws -> T {
    let dir = NSTemporaryDirectory() + "imgvol-transfer-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    return try body(dir)
}

/// Reads a source to its end; nil bytes when it threw.
func readAll(_ source: ByteSourceAdapter, onChunk: (Int) -> Void = { _ in }) -> (bytes: [UInt8], error: (any Error)?) {
    var out: [UInt8] = []
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 100_000, alignment: 16)
    defer { buffer.deallocate() }
    do {
        while true {
            let n = try source.read(into: buffer)
            if n == 0 { return (out, nil) }
            out += buffer[0..<n]
            onChunk(out.count)
        }
    } catch {
        return (out, error)
    }
}

@Suite("PartialBlob")
struct PartialBlobTests {
    /// A restart (the server ignored Range) empties the file and the hash, and a follower of
    /// the first generation is told to start over instead of reading a mix of both.
    @Test func aRestartStartsOverForWriterAndFollower() throws {
        try withTempDir { dir in
            let first = pseudoRandom(300_000, seed: 1)
            let second = pseudoRandom(200_000, seed: 2)
            let blob = try PartialBlob(path: dir + "/b.partial", direct: false, retaining: true) { _ in }
            let follower = FollowingReader(blob)
            try first.withUnsafeBytes { try blob.append($0) }
            try blob.flush()
            try blob.restart()
            #expect(throws: PartialBlob.Restarted.self) { _ = try follower.read(into: .allocate(byteCount: 16, alignment: 1)) }
            try second.withUnsafeBytes { try blob.append($0) }
            try blob.end()
            #expect(blob.digest() == Digest.of(second))
            #expect(try Array(Data(contentsOf: URL(fileURLWithPath: blob.path))) == second)
            let (read, error) = readAll(FollowingReader(blob))
            #expect(error == nil)
            #expect(read == second)
        }
    }

    /// What an interrupted pull left is hashed again, so the download resumes after it.
    @Test func aLeftoverFileIsResumedFrom() throws {
        try withTempDir { dir in
            let bytes = pseudoRandom(150_000, seed: 3)
            let path = dir + "/b.partial"
            try Data(bytes[0..<100_000]).write(to: URL(fileURLWithPath: path))
            let blob = try PartialBlob(path: path, direct: false) { _ in }
            #expect(blob.count == 100_000)
            try bytes[100_000...].withUnsafeBytes { try blob.append($0) }
            try blob.end()
            #expect(blob.digest() == Digest.of(bytes))
        }
    }

    /// A download that fails ends the follower's wait with that error.
    @Test func aFailedDownloadFailsTheFollower() throws {
        try withTempDir { dir in
            struct Broken: Error {}
            let blob = try PartialBlob(path: dir + "/b.partial", direct: false) { _ in }
            try pseudoRandom(10_000, seed: 4).withUnsafeBytes { try blob.append($0) }
            try blob.flush()
            try blob.end(error: Broken())
            let (_, error) = readAll(FollowingReader(blob))
            #expect(error is Broken)
        }
    }
}

@Suite("PipedBlob")
struct PipedBlobTests {
    /// The queue holds the download back at its limit until the reader takes chunks, and the
    /// digest covers every byte whoever hashed it.
    @Test func theQueueIsBoundedAndTheDigestCoversEverything() async throws {
        let chunks = (0..<40).map { pseudoRandom(10_000, seed: UInt64($0) + 10) }
        let blob = PipedBlob(digest: Digest.of([]), limit: 50_000) { _ in }
        let appended = Atomic<Int>(0)
        let download = Task.detached {
            for chunk in chunks {
                try chunk.withUnsafeBytes { try blob.append($0) }
                appended.add(1, ordering: .releasing)
            }
            blob.end()
        }
        let reader = PipedReader(blob)
        // Reading one chunk at a time: never more than the limit (5 chunks) plus the one
        // being appended are ahead of the reader.
        var read: [UInt8] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 10_000, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = try reader.read(into: buffer)
            if n == 0 { break }
            read += buffer[0..<n]
            let taken = read.count / 10_000
            #expect(appended.load(ordering: .acquiring) <= taken + 6)
        }
        blob.readerFinished()
        try await download.value
        #expect(read == chunks.flatMap { $0 })
        #expect(blob.digest() == Digest.of(chunks.flatMap { $0 }))
    }

    /// A reader that stops early no longer holds the download back, and the digest still
    /// covers what came after.
    @Test func aReaderThatStopsReleasesTheDownload() async throws {
        let bytes = pseudoRandom(500_000, seed: 5)
        let blob = PipedBlob(digest: Digest.of(bytes), limit: 20_000) { _ in }
        blob.readerFinished()
        try await Task.detached {
            for start in stride(from: 0, to: bytes.count, by: 10_000) {
                try bytes[start..<min(bytes.count, start + 10_000)].withUnsafeBytes { try blob.append($0) }
            }
        }.value
        #expect(blob.digest() == Digest.of(bytes))
    }
}

@Suite("RangedStream")
struct RangedStreamTests {
    static let chunk: Int64 = 64 << 10

    /// The streams never run more than two chunks each ahead of the slower reader: every
    /// chunk requested was within that window of what the decompressor had consumed.
    @Test func aSlowReaderHoldsTheWindowBack() async throws {
        let bytes = pseudoRandom(Int(Self.chunk) * 12 + 100, seed: 6)
        let source = MemorySource(bytes, chunkSize: Self.chunk)
        let stream = RangedStream(descriptor: descriptor(of: bytes), chunkSize: Self.chunk)
        let reading = BlockingThreads.task {
            readAll(RangedStreamReader(stream)) { count in source.consumed.store(count / Int(Self.chunk), ordering: .releasing) }
        }
        try await stream.fetchAll(client: source, endpoints: [], reference: reference, streams: 1, onBytes: nil)
        let (read, error) = try await reading.value
        #expect(error == nil)
        #expect(read == bytes)
        let requests = source.requests.withLock { $0 }
        #expect(requests.count == 13)
        for request in requests {
            // Window: 2 chunks per stream; the reader's current chunk is lent, not passed.
            #expect(request.chunk < request.consumed + 2 + 1, "chunk \(request.chunk) fetched when the reader had consumed \(request.consumed)")
        }
    }

    /// A stream that fails midway fails the download and the reader, instead of leaving
    /// either waiting.
    @Test(.timeLimit(.minutes(1))) func aFailureMidwayEndsEveryone() async throws {
        let bytes = pseudoRandom(Int(Self.chunk) * 8, seed: 7)
        let source = MemorySource(bytes, chunkSize: Self.chunk, failAt: Self.chunk * 4)
        let stream = RangedStream(descriptor: descriptor(of: bytes), chunkSize: Self.chunk)
        let reading = BlockingThreads.task { readAll(RangedStreamReader(stream)) }
        await #expect(throws: MemorySource.Dropped.self) {
            try await stream.fetchAll(client: source, endpoints: [], reference: reference, streams: 2, onBytes: nil)
        }
        let (read, error) = try await reading.value
        #expect(error is RegistryError)
        #expect(read.count <= Int(Self.chunk) * 4)
    }

    /// Bytes that do not hash to the descriptor's digest fail verification, naming it.
    @Test func aCorruptBlobFailsItsDigest() async throws {
        let bytes = pseudoRandom(Int(Self.chunk) * 3, seed: 8)
        var corrupt = bytes
        corrupt[1000] ^= 1
        let stream = RangedStream(descriptor: descriptor(of: bytes), chunkSize: Self.chunk)
        stream.decompressorFinished()
        await #expect(throws: RegistryError.self) {
            try await stream.fetchAll(client: MemorySource(corrupt, chunkSize: Self.chunk), endpoints: [], reference: reference,
                                      streams: 2, onBytes: nil)
        }
        #expect(stream.failureMessage?.contains("failed verification") == true)
    }
}

@Suite("RangedBlob")
struct RangedBlobTests {
    /// A reader's chunk in the middle is fetched first while the in-order download is off,
    /// and the whole blob verifies once the download is on.
    @Test(.timeLimit(.minutes(1))) func aReaderIsServedBeforeTheInOrderDownload() async throws {
        try await withTempDirAsync { dir in
            let chunk: Int64 = 64 << 10
            let bytes = pseudoRandom(Int(chunk) * 10, seed: 9)
            let source = MemorySource(bytes, chunkSize: chunk)
            let signal = RangedFetch.Signal()
            let blob = try RangedBlob(descriptor: descriptor(of: bytes), path: dir + "/b.lazy", chunkSize: chunk, readAhead: 0,
                                      signal: signal)
            let hashing = blob.startHashing()
            let fetch = RangedFetch(blobs: [blob], client: source, endpoints: [], reference: reference, signal: signal)
            let fetching = Task { try await fetch.run(streams: 2) }
            let middle = try await BlockingThreads.run {
                var buffer = [UInt8](repeating: 0, count: 100)
                let n = try buffer.withUnsafeMutableBytes { try blob.read(into: $0, at: chunk * 7 + 5) }
                return Array(buffer[0..<n])
            }
            #expect(middle == Array(bytes[Int(chunk) * 7 + 5..<Int(chunk) * 7 + 105]))
            #expect(source.requests.withLock { $0.map(\.chunk) } == [7], "only the chunk the reader asked for, while off")
            signal.turnOn()
            try await fetching.value
            try await blob.verify(hashing, reference: reference)
            #expect(Set(source.requests.withLock { $0.map(\.chunk) }) == Set(0..<10))
        }
    }
}

func withTempDirAsync<T>(_ body: (String) async throws -> T) async throws -> T {
    let dir = NSTemporaryDirectory() + "imgvol-transfer-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    return try await body(dir)
}
