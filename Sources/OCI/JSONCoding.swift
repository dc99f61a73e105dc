import Foundation

/// One place that turns JSON errors into `OCIError`s naming the document.
public enum JSONCoding {
    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8], what: String) throws(OCIError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch {
            throw OCIError(.invalidDocument, what, "not valid JSON of the expected shape (\(error))")
        }
    }

    public static func encode<T: Encodable>(_ value: T, pretty: Bool = false) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        // Encoding our own Codable values cannot fail: they hold only strings, numbers and arrays.
        return (try? Array(encoder.encode(value))) ?? Array("null".utf8)
    }
}
