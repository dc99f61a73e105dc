import Dispatch
import FileIO
import Synchronization

/// Checks one stored file against its `ChunkSums` before its bytes are first served (unless
/// fs-verity is on for it, and the kernel checks every read instead): each
/// chunk is read and checked once, on the first read that touches it; a chunk that does not
/// match stays bad for the life of the verifier (the mount), and so does every read of it.
public final class ChunkVerifier: Sendable {
    public let file: OpenFile
    public let sums: ChunkSums
    private enum ChunkState: UInt8 { case unchecked, good, bad }
    private struct State {
        var chunks: [ChunkState]
        var unchecked: Int
        /// The first damage found, reported once.
        var damage: ChunkDamage?
        var reported = false
        /// The file is of the wrong size: no byte of it is served.
        var wholeFile = false

        /// The damage, and whether this is the first time anyone is told.
        mutating func tell() -> (ChunkDamage, Bool)? {
            guard let damage else { return nil }
            defer { reported = true }
            return (damage, !reported)
        }
    }
    private let state: Mutex<State>

    public init(file: OpenFile, sums: ChunkSums) {
        self.file = file
        self.sums = sums
        let count = sums.sums.count
        var initial = State(chunks: Array(repeating: .unchecked, count: count), unchecked: count)
        // A file of the wrong size is damaged as a whole: no chunk of it is served.
        let actual = (try? file.size()) ?? -1
        if actual != sums.size || count != ChunkSums.chunkCount(size: sums.size) {
            initial.chunks = Array(repeating: .bad, count: count)
            initial.unchecked = 0
            initial.wholeFile = true
            initial.damage = ChunkDamage(path: file.path, offset: 0, problem: actual < 0
                ? "its size cannot be read" : "it is \(actual) bytes, \(sums.size) were stored")
        }
        // With fs-verity on, the kernel checks every read of the file against a tree made
        // from the verified bytes: nothing is left to check here.
        if initial.damage == nil, FSVerity.isOn(file) {
            initial.chunks = Array(repeating: .good, count: count)
            initial.unchecked = 0
        }
        state = Mutex(initial)
    }

    /// Every chunk checked and good: the file may be handed to the kernel as it is
    /// (passthrough), since no read of it will reach a check again.
    public var isVerified: Bool {
        state.withLock { $0.unchecked == 0 && $0.damage == nil }
    }

    public var damage: ChunkDamage? { state.withLock { $0.damage } }

    /// Whether any chunk under `[offset, offset + length)` is known bad (a file of a tar that
    /// shares a bad chunk with another is refused whole, not only where the chunk is).
    public func isDamaged(offset: Int64, length: Int64) -> Bool {
        state.withLock { s in
            guard s.damage != nil else { return false }
            if s.wholeFile { return true }
            guard length > 0, offset >= 0, !s.chunks.isEmpty else { return false }
            let first = Int(offset / Int64(ChunkSums.chunkSize))
            let last = min(Int((offset + length - 1) / Int64(ChunkSums.chunkSize)), s.chunks.count - 1)
            guard first <= last else { return false }
            return s.chunks[first...last].contains(.bad)
        }
    }

    /// Checks the chunks under `[offset, offset + length)` not checked yet. Returns the damage
    /// when any of them (now or before) did not match: `newly` is true for the call that found
    /// it, which reports it.
    /// `through`: another descriptor of the same file to read with.
    public func check(offset: Int64, length: Int, through reader: OpenFile? = nil) -> (damage: ChunkDamage, newly: Bool)? {
        guard length > 0, offset >= 0 else { return nil }
        if let whole = state.withLock({ $0.wholeFile ? $0.tell() : nil }) { return whole }
        let first = Int(offset / Int64(ChunkSums.chunkSize))
        let last = min(Int((offset + Int64(length) - 1) / Int64(ChunkSums.chunkSize)), sums.sums.count - 1)
        guard first <= last else { return nil }
        var todo: [Int] = []
        let earlier: (ChunkDamage, Bool)? = state.withLock { s in
            for n in first...last {
                switch s.chunks[n] {
                case .bad: return s.tell()
                case .unchecked: todo.append(n)
                case .good: break
                }
            }
            return nil
        }
        if let earlier { return earlier }
        guard !todo.isEmpty else { return nil }
        return ChunkBuffers.shared.with { buffer in
            for n in todo {
                let (start, count) = sums.range(of: n)
                let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
                let problem: String?
                do {
                    let got = try (reader ?? file).read(into: target, at: start)
                    problem = got < count ? "it ends at byte \(start + Int64(got))"
                        : sums.matches(n, UnsafeRawBufferPointer(target)) ? nil : "bytes \(start)..<\(start + Int64(count)) do not match the checksum recorded when it was stored"
                } catch {
                    problem = "bytes \(start)..<\(start + Int64(count)) cannot be read (\(error))"
                }
                let reported: (ChunkDamage, Bool)? = state.withLock { s in
                    guard let problem else {
                        if s.chunks[n] == .unchecked { s.chunks[n] = .good; s.unchecked -= 1 }
                        return nil
                    }
                    if s.chunks[n] == .unchecked { s.unchecked -= 1 }
                    s.chunks[n] = .bad
                    if s.damage == nil { s.damage = ChunkDamage(path: file.path, offset: start, problem: problem) }
                    return s.tell()
                }
                if let reported { return reported }
            }
            return nil
        }
    }

    /// Checks every chunk not checked yet, `workers` contiguous parts of the file at once
    /// (each on its own descriptor, so the kernel reads each part ahead as the sequential
    /// read it is): what a file needs before it may pass through to the kernel. Returns the
    /// damage as `check` does.
    public func checkAll(workers: Int = 2) -> (damage: ChunkDamage, newly: Bool)? {
        let count = sums.sums.count
        let parts = max(1, min(workers, count))
        let found = Mutex<(ChunkDamage, Bool)?>(nil)
        DispatchQueue.concurrentPerform(iterations: parts) { part in
            let first = count * part / parts
            let end = count * (part + 1) / parts
            guard first < end else { return }
            let reader = file.reopenForReading()
            defer { reader?.close() }
            let step = 16
            var n = first
            while n < end {
                let last = min(n + step, end)
                let start = Int64(n) * Int64(ChunkSums.chunkSize)
                let stop = min(Int64(last) * Int64(ChunkSums.chunkSize), sums.size)
                if let damage = check(offset: start, length: Int(stop - start), through: reader) {
                    found.withLock { if $0 == nil || damage.newly { $0 = damage } }
                    return
                }
                n = last
            }
        }
        return found.withLock { $0 }
    }
}

/// What a verifier found wrong with a stored file.
public struct ChunkDamage: Sendable, Equatable, CustomStringConvertible {
    public let path: String
    /// Where in the file the first bad chunk starts.
    public let offset: Int64
    public let problem: String

    public var description: String { "\(path): \(problem)" }
}

/// Chunk-sized read buffers, reused: the FUSE server's threads check chunks concurrently, and
/// an allocation per check (mapped and faulted in anew each time) would cost as much as the
/// check.
final class ChunkBuffers: Sendable {
    /// A buffer owned by whoever took it from the pool until it is given back.
    private struct Buffer: @unchecked Sendable {
        let bytes: UnsafeMutableRawBufferPointer
    }

    static let shared = ChunkBuffers()
    private let free = Mutex<[Buffer]>([])

    func with<T>(_ body: (UnsafeMutableRawBufferPointer) -> T) -> T {
        let buffer = free.withLock { $0.popLast() } ?? Buffer(bytes: .allocate(byteCount: ChunkSums.chunkSize, alignment: 4096))
        defer { free.withLock { $0.append(buffer) } }
        return body(buffer.bytes)
    }
}
