import NIOCore

/// `--timeout DURATION`: how long a registry may stay silent, on connecting, on the TLS
/// handshake and between two reads of an answer, before the request is given up (and
/// retried, a blob resuming with `Range`). A registry that accepts and never answers must not
/// hold a pull, or a device, for minutes without a word.
public enum RequestTimeout {
    public static let defaultIdle: TimeAmount = .seconds(30)
    /// Connecting (TCP and TLS) gets at most this much, or the idle timeout if shorter.
    public static let defaultConnect: TimeAmount = .seconds(5)

    /// `30s`, `500ms`, `2m`, `1h`, or a bare number of seconds; more than zero.
    public static func parse(_ text: String) throws(RegistryError) -> TimeAmount {
        let units: [(String, Int64)] = [("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000)]
        var number = Substring(text)
        var scale: Int64 = 1_000_000_000
        for (suffix, nanos) in units where text.hasSuffix(suffix) {
            number = text.dropLast(suffix.count)
            scale = nanos
            break
        }
        guard let value = Double(number), value.isFinite, value > 0, value * Double(scale) < Double(Int64.max / 2) else {
            throw RegistryError(.invalidConfiguration, "--timeout \"\(text)\" is not a duration; give one such as 30s, 500ms or 2m")
        }
        return .nanoseconds(max(1, Int64(value * Double(scale))))
    }

    /// "2s", "1.5s", "500ms": how long was waited, for messages.
    public static func describe(_ amount: TimeAmount) -> String {
        let nanos = amount.nanoseconds
        if nanos % 1_000_000_000 == 0 { return "\(nanos / 1_000_000_000)s" }
        if nanos >= 1_000_000_000 { return "\(Double(nanos / 1_000_000) / 1000)s" }
        return "\(max(1, nanos / 1_000_000))ms"
    }
}
