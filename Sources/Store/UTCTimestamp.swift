#if canImport(Glibc)
import Glibc
#endif

/// "2026-11-27T13:59:00Z", the form ISO8601DateFormatter writes, for records (pulled,
/// mounted, published). Not ISO8601DateFormatter itself: its first use loads ICU's time zone
/// data, a noticeable part of a cold `imgvol mount`, to format a time that is always UTC.
public enum UTCTimestamp {
    public static func now() -> String {
        var seconds = time(nil)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))"
            + "T\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2))Z"
    }
}
