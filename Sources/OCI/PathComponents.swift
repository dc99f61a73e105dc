/// The parts of a slash-separated name from a layer or an artifact, split on the "/" byte.
///
/// Names in tars and artifact titles are bytes to the kernel. Swift's `split(separator:)` on
/// a String compares Characters, and a combining mark after "/" makes one Character with it:
/// such a split sees no separator in "../\u{301}x", so its ".." went unnoticed, and `unpack`
/// then handed the whole name to openat, which does see the "/".
public enum PathComponents {
    /// The non-empty parts, in order.
    public static func split(_ path: String) -> [Substring] {
        let bytes = path.utf8
        var parts: [Substring] = []
        var start = bytes.startIndex
        var index = start
        while index < bytes.endIndex {
            if bytes[index] == slash {
                if start < index { parts.append(Substring(bytes[start..<index])) }
                start = bytes.index(after: index)
            }
            index = bytes.index(after: index)
        }
        if start < bytes.endIndex { parts.append(Substring(bytes[start..<bytes.endIndex])) }
        return parts
    }

    /// "." byte for byte.
    public static func isCurrent(_ part: Substring) -> Bool { part.utf8.elementsEqual(".".utf8) }

    /// ".." byte for byte.
    public static func isParent(_ part: Substring) -> Bool { part.utf8.elementsEqual("..".utf8) }

    static let slash = UInt8(ascii: "/")
}
