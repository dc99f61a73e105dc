import FileIO
import OCI

/// Names → image digests, in one small JSON file rewritten atomically under its lock.
extension ContentStore {
    public func references() -> [String: Digest] {
        guard let bytes = try? FileSystem.readFile(refsPath),
              let refs = try? JSONCoding.decode([String: Digest].self, from: bytes, what: "refs.json") else { return [:] }
        return refs
    }

    public func digest(for reference: Reference) -> Digest? {
        references()[reference.description]
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
        var refs = references()
        change(&refs)
        try FileSystem.writeAtomically(JSONCoding.encode(refs, pretty: true), to: refsPath, tmpDir: tmpDir, mode: 0o600)
    }
}
