import Foundation

/// A fresh directory under /tmp, removed when the test's closure returns.
func withTempDir<T>(_ body: (String) throws -> T) throws -> T {
    var template = Array("/tmp/imgvol-registry-tests.XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw CocoaError(.fileWriteUnknown) }
    let dir = String(cString: made)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    return try body(dir)
}

func write(_ text: String, to path: String) throws {
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
}

func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }
