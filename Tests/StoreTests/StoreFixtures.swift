import Foundation
import OCI
import Store

/// A fresh directory under /tmp, removed when the closure returns.
func withTempDir<T>(_ body: (String) async throws -> T) async throws -> T {
    var template = Array("/tmp/imgvol-store-tests.XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw CocoaError(.fileWriteUnknown) }
    let dir = String(cString: made)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    return try await body(dir)
}

func withStore<T>(_ body: (ContentStore) async throws -> T) async throws -> T {
    try await withTempDir { dir in try await body(try ContentStore(root: dir + "/store")) }
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

func writeFile(_ bytes: [UInt8], to path: String) throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }

func modeOf(_ path: String) -> UInt32? {
    var st = stat()
    guard lstat(path, &st) == 0 else { return nil }
    return UInt32(st.st_mode) & 0o7777
}

func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

func list(_ dir: String) -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() }
