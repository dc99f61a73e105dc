import FileIO
import OCI

/// Names → image digests, in one small JSON file rewritten atomically under its lock. A
/// damaged file is an error for every reader and writer: a pull never rewrites it with only
/// its own name, and `prune` never takes "no names" from it.
extension ContentStore {
    var refsFile: StateFile<[String: Digest]> {
        StateFile(path: refsPath, what: "the store's image names", initial: [:])
    }

    public func references() throws(StoreError) -> [String: Digest] {
        try refsFile.load()
    }

    public func digest(for reference: Reference) throws(StoreError) -> Digest? {
        try references()[reference.description]
    }

    public func setReference(_ reference: Reference, to digest: Digest) async throws {
        try await updateReferences { $0[reference.description] = digest }
    }

    /// Removes the name; returns the digest it named.
    public func removeReference(_ name: String) async throws -> Digest? {
        var removed: Digest?
        try await updateReferences { removed = $0.removeValue(forKey: name) }
        return removed
    }

    private func updateReferences(_ change: (inout [String: Digest]) -> Void) async throws {
        let lock = try await self.lock("refs")
        defer { lock.release() }
        var refs = try references()
        change(&refs)
        try refsFile.save(refs, tmpDir: tmpDir)
    }
}
