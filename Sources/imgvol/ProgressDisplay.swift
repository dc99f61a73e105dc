import Foundation
import Pull
import OCI
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Per-layer and total progress on a terminal (stderr), redrawn at most ten times a second.
/// Not created at all when stderr is not a TTY or with --quiet: pipes stay clean.
final class ProgressDisplay: PullProgress {
    private struct Layer {
        var size: Int64
        var bytes: Int64 = 0
        var state = "waiting"
    }

    private struct State {
        var layers: [Digest: Layer] = [:]
        var order: [Digest] = []
        var linesDrawn = 0
        var lastDraw: UInt64 = 0
    }

    private let state = Mutex(State())
    private let started = DispatchTime.now().uptimeNanoseconds

    static func forTerminal(quiet: Bool) -> ProgressDisplay? {
        quiet || isatty(STDERR_FILENO) == 0 ? nil : ProgressDisplay()
    }

    func layerStarted(_ digest: Digest, size: Int64) {
        update(digest) { $0.state = "downloading"; $0.size = size }
    }

    func layerProgress(_ digest: Digest, bytes: Int64) {
        update(digest) { $0.bytes = bytes }
    }

    func layerFinished(_ digest: Digest, cached: Bool) {
        update(digest, force: true) { $0.state = cached ? "already present" : "done"; if !cached { $0.bytes = $0.size } }
    }

    func finish() { draw(force: true) }

    private func update(_ digest: Digest, force: Bool = false, _ change: (inout Layer) -> Void) {
        state.withLock { s in
            if s.layers[digest] == nil { s.layers[digest] = Layer(size: 0); s.order.append(digest) }
            if var layer = s.layers[digest] { change(&layer); s.layers[digest] = layer }
        }
        draw(force: force)
    }

    private func draw(force: Bool) {
        let now = DispatchTime.now().uptimeNanoseconds
        let text: String? = state.withLock { s in
            guard force || now - s.lastDraw > 100_000_000 else { return nil }
            s.lastDraw = now
            let elapsed = max(Double(now - started) / 1e9, 0.001)
            var lines: [String] = []
            var total: Int64 = 0
            var done: Int64 = 0
            for digest in s.order {
                guard let l = s.layers[digest] else { continue }
                total += l.size
                done += l.bytes
                lines.append("  \(digest.short)  \(Self.bytes(l.bytes)) / \(Self.bytes(l.size))  \(l.state)")
            }
            lines.append("  total \(Self.bytes(done)) / \(Self.bytes(total))  \(Self.bytes(Int64(Double(done) / elapsed)))/s")
            var out = s.linesDrawn > 0 ? "\u{1B}[\(s.linesDrawn)F" : ""
            for line in lines { out += "\u{1B}[2K" + line + "\n" }
            s.linesDrawn = lines.count
            return out
        }
        if let text { FileHandle.standardError.write(Data(text.utf8)) }
    }

    static func bytes(_ n: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(n)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(n) B" : String(format: "%.1f %@", value, units[unit])
    }
}
