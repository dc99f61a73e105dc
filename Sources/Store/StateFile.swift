import FileIO
import OCI

/// One small JSON file of store state (`refs.json`, the volume plugin's volumes), read so
/// that damage is an error and never "empty": a command that went on as if the file were
/// empty would forget, or delete, everything it named.
public struct StateFile<Value: Codable & Sendable>: Sendable {
    public let path: String
    /// What the file holds, for messages ("the store's references").
    public let what: String
    /// The value of a file that does not exist yet (a new store).
    public let initial: Value

    public init(path: String, what: String, initial: Value) {
        self.path = path
        self.what = what
        self.initial = initial
    }

    public func load() throws(StoreError) -> Value {
        guard FileSystem.exists(path) else { return initial }
        let bytes: [UInt8]
        do { bytes = try FileSystem.readFile(path) } catch {
            throw StoreError(.io, "cannot read \(what) in \(path): \(error); nothing was changed")
        }
        do { return try JSONCoding.decode(Value.self, from: bytes, what: path) } catch {
            throw StoreError(.corrupt, "\(path) (\(what)) is damaged and was left as it is (\(error)); "
                + "restore it, or move it aside to start over: `mv \(path) \(path).damaged`")
        }
    }

    /// Atomic (temp file + fsync + rename): a crash leaves the old file or the new one.
    public func save(_ value: Value, tmpDir: String) throws(StoreError) {
        do {
            try FileSystem.writeAtomically(JSONCoding.encode(value, pretty: true), to: path, tmpDir: tmpDir, mode: 0o600)
        } catch { throw StoreError(.io, "cannot write \(what) to \(path): \(error)") }
    }
}
