import OCI
/// Turns a tar entry name into a path inside the image root. Absolute names are made relative
/// (as docker and containerd do); `..` that would climb above the root is refused, since no
/// honest layer has one and a hostile one would write outside the tree.
public enum TarPath {
    public enum Problem: Error, Equatable {
        case escapesRoot
        case empty
    }

    public static func normalize(_ raw: String) throws(Problem) -> String {
        if isNormal(raw) { return raw }
        var parts: [Substring] = []
        for part in PathComponents.split(raw) {
            if PathComponents.isCurrent(part) { continue }
            if PathComponents.isParent(part) {
                guard !parts.isEmpty else { throw .escapesRoot }
                parts.removeLast()
            } else {
                parts.append(part)
            }
        }
        return parts.joined(separator: "/")
    }

    // parent and base search the UTF-8 bytes: "/" is one byte, and a search by Character
    // (grapheme breaking on every step) was most of their cost in merging 21,000 entries.
    public static func parent(_ path: String) -> String {
        guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) else { return "" }
        return String(path[..<slash])
    }

    public static func base(_ path: String) -> String {
        guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) else { return path }
        return String(path[path.utf8.index(after: slash)...])
    }

    /// Whether `raw` is already in normal form: relative, no empty, "." or ".." parts, no
    /// trailing "/". Most tar names are, and need no splitting and joining.
    static func isNormal(_ raw: String) -> Bool {
        var partLength = 0
        var dots = 0
        for byte in raw.utf8 {
            if byte == UInt8(ascii: "/") {
                if partLength == 0 || partLength == dots && dots <= 2 { return false }
                partLength = 0
                dots = 0
            } else {
                partLength += 1
                if byte == UInt8(ascii: ".") { dots += 1 }
            }
        }
        return partLength > 0 && !(partLength == dots && dots <= 2)
    }

    public static let whiteoutPrefix = ".wh."
    public static let opaqueMarker = ".wh..wh..opq"
}
