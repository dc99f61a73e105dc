/// A raw artifact layer served as one regular file: where it sits and the attributes it shows.
public struct ArtifactFile: Codable, Sendable, Equatable, Hashable {
    public var path: String
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var mtimeSeconds: Int64

    public init(path: String, mode: UInt32 = 0o644, uid: UInt32 = 0, gid: UInt32 = 0, mtimeSeconds: Int64 = 0) {
        self.path = path
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtimeSeconds = mtimeSeconds
    }

    /// ModelPack's `org.cncf.model.file.metadata+json`: the file's mode, owner and mtime as the
    /// packager saw them. Only the permission bits of `mode` are taken; the type is always a
    /// regular file.
    mutating func apply(metadataJSON json: String, layer: Descriptor) throws(OCIError) {
        struct Metadata: Decodable {
            var mode: UInt32?
            var uid: UInt32?
            var gid: UInt32?
            var mtime: String?
        }
        let metadata: Metadata
        do { metadata = try JSONCoding.decode(Metadata.self, from: Array(json.utf8), what: "file metadata") } catch {
            throw OCIError(.invalidDocument, "annotation \(ArtifactLayout.modelFileMetadataAnnotation) of layer \(layer.digest)",
                           "it is not the JSON object the ModelPack spec describes (\(error))")
        }
        if let mode = metadata.mode { self.mode = mode & 0o7777 }
        if let uid = metadata.uid { self.uid = uid }
        if let gid = metadata.gid { self.gid = gid }
        if let text = metadata.mtime, let seconds = RFC3339.seconds(text) { mtimeSeconds = seconds }
    }
}

/// RFC 3339 timestamps as registries and packagers write them (`2025-03-15T14:30:00Z`,
/// `…+02:00`, fractional seconds), parsed without Foundation's formatters.
public enum RFC3339 {
    public static func seconds(_ text: String) -> Int64? {
        let bytes = Array(text.utf8)
        guard bytes.count >= 20 else { return nil }
        func number(_ range: Range<Int>) -> Int64? {
            var value: Int64 = 0
            for i in range {
                guard bytes[i] >= 48, bytes[i] <= 57 else { return nil }
                value = value * 10 + Int64(bytes[i] - 48)
            }
            return value
        }
        guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
              let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19),
              (1...12).contains(month), (1...31).contains(day) else { return nil }
        var index = 19
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            while index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 { index += 1 }
        }
        var offset: Int64 = 0
        if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
            guard index + 6 <= bytes.count, let h = number(index + 1..<index + 3), let m = number(index + 4..<index + 6) else { return nil }
            offset = (h * 3600 + m * 60) * (bytes[index] == UInt8(ascii: "+") ? 1 : -1)
        } else if index >= bytes.count || (bytes[index] != UInt8(ascii: "Z") && bytes[index] != UInt8(ascii: "z")) {
            return nil
        }
        return daysSinceEpoch(year: year, month: month, day: day) * 86400 + hour * 3600 + minute * 60 + second - offset
    }

    /// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's civil algorithm).
    static func daysSinceEpoch(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }
}
