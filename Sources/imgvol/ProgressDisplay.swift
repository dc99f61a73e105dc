import Foundation
import Pull
import OCI
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Per-layer and total progress on a terminal (stderr), redrawn at most ten times a second.
/// Not created at all when stderr is not a TTY or with --quiet: pipes stay clean.
///
/// A stalled download sends no events, so a timer checks once a second and, once no bytes have
/// come for `stallAfter`, says so on the total line (and counts the seconds) until they do.
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
        /// When bytes last came, or the first layer of a wait began downloading.
        var lastBytes: UInt64 = 0
        var finished = false

        var downloading: Bool { layers.values.contains { $0.state == "downloading" } }
    }

    private enum Redraw {
        /// Bytes came or a layer started: at most ten frames a second.
        case progress
        /// A layer finished.
        case change
        /// The timer: only while stalled.
        case tick
        case finish
    }

    static let stallAfter: UInt64 = 5_000_000_000

    private let state = Mutex(State())
    private let started = DispatchTime.now().uptimeNanoseconds
    /// The registry being waited on, when the caller knows it (the pull commands make the
    /// display before the endpoint, a mirror or the origin, is chosen, so today none does).
    private let registry: String?
    /// Dispatch's timer is not Sendable: it is touched only under this lock.
    private let timer: Mutex<(any DispatchSourceTimer)?>

    init(registry: String? = nil) {
        self.registry = registry
        timer = Mutex(DispatchSource.makeTimerSource(queue: .global(qos: .utility)))
        timer.withLock { timer in
            timer?.schedule(deadline: .now() + 1, repeating: 1, leeway: .milliseconds(100))
            timer?.setEventHandler { [weak self] in self?.draw(.tick) }
            timer?.resume()
        }
    }

    deinit { stopTimer() }

    private func stopTimer() {
        timer.withLock { timer in
            timer?.cancel()
            timer = nil
        }
    }

    static func forTerminal(quiet: Bool, registry: String? = nil) -> ProgressDisplay? {
        quiet || isatty(STDERR_FILENO) == 0 ? nil : ProgressDisplay(registry: registry)
    }

    func layerStarted(_ digest: Digest, size: Int64) {
        update(digest, .progress) { $0.state = "downloading"; $0.size = size }
    }

    func layerProgress(_ digest: Digest, bytes: Int64) {
        update(digest, .progress, bytesCame: true) { $0.bytes = bytes }
    }

    func layerFinished(_ digest: Digest, cached: Bool) {
        update(digest, .change) { $0.state = cached ? "already present" : "done"; if !cached { $0.bytes = $0.size } }
    }

    /// The last frame; nothing is drawn after it, over what the command prints next.
    func finish() {
        stopTimer()
        draw(.finish)
    }

    private func update(_ digest: Digest, _ reason: Redraw, bytesCame: Bool = false, _ change: (inout Layer) -> Void) {
        state.withLock { s in
            let wasDownloading = bytesCame || s.downloading
            if s.layers[digest] == nil { s.layers[digest] = Layer(size: 0); s.order.append(digest) }
            if var layer = s.layers[digest] { change(&layer); s.layers[digest] = layer }
            // A wait begins when the first layer starts downloading.
            if bytesCame || (!wasDownloading && s.downloading) { s.lastBytes = DispatchTime.now().uptimeNanoseconds }
        }
        draw(reason)
    }

    /// Written under the lock, so that frames from the timer and from events reach the
    /// terminal in the order they were made (a stale frame after the last one would stay).
    private func draw(_ reason: Redraw) {
        state.withLock { s in
            let now = DispatchTime.now().uptimeNanoseconds
            func silence() -> UInt64? {
                s.downloading && now - s.lastBytes >= Self.stallAfter ? now - s.lastBytes : nil
            }
            switch reason {
            case .progress: guard !s.finished, now - s.lastDraw > 100_000_000 else { return }
            case .change: guard !s.finished else { return }
            case .tick: guard !s.finished, silence() != nil else { return }
            case .finish: s.finished = true
            }
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
            var totalLine = "  total \(Self.bytes(done)) / \(Self.bytes(total))  \(Self.bytes(Int64(Double(done) / elapsed)))/s"
            if let silent = silence() { totalLine += "  " + Self.stallNote(seconds: silent / 1_000_000_000, registry: registry) }
            lines.append(totalLine)
            var out = s.linesDrawn > 0 ? "\u{1B}[\(s.linesDrawn)F" : ""
            for line in lines { out += "\u{1B}[2K" + line + "\n" }
            s.linesDrawn = lines.count
            FileHandle.standardError.write(Data(out.utf8))
        }
    }

    static func stallNote(seconds: UInt64, registry: String?) -> String {
        "(\(registry.map { "registry \($0) " } ?? "")stalled: no bytes for \(seconds) s)"
    }

    static func bytes(_ n: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(n)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(n) B" : String(format: "%.1f %@", value, units[unit])
    }
}
