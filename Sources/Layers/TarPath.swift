/// Turns a tar entry name into a path inside the image root. Absolute names are made relative
/// (as docker and containerd do); `..` that would climb above the root is refused, since no
/// honest layer has one and a hostile one would write outside the tree.
public enum TarPath {
    public enum Problem: Error, Equatable {
        case escapesRoot
        case empty
    }

    public static func normalize(_ raw: String) throws(Problem) -> String {
        var parts: [Substring] = []
        for part in raw.split(separator: "/", omittingEmptySubsequences: true) {
            switch part {
            case ".": continue
            case "..":
                guard !parts.isEmpty else { throw .escapesRoot }
                parts.removeLast()
            default:
                parts.append(part)
            }
        }
        return parts.joined(separator: "/")
    }

    public static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "" }
        return String(path[..<slash])
    }

    public static func base(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    public static let whiteoutPrefix = ".wh."
    public static let opaqueMarker = ".wh..wh..opq"
}
