import FileIO
import OCI

/// Damage a mount server found while serving (a chunk that did not match its sum): written
/// where `imgvol check` and the CSI metrics find it, one file per damaged layer or blob, kept
/// until `check --repair` has moved the part aside.
extension ContentStore {
    public struct DamageReport: Codable, Sendable, Equatable {
        /// The layer's diff_id, or the raw file blob's digest.
        public let digest: Digest
        /// The stored file the bad chunk is in.
        public let path: String
        public let offset: Int64
        public let problem: String
        /// The image whose mount found it.
        public let image: Digest?
        public let foundAt: String

        public init(digest: Digest, path: String, offset: Int64, problem: String, image: Digest?) {
            self.digest = digest
            self.path = path
            self.offset = offset
            self.problem = problem
            self.image = image
            foundAt = UTCTimestamp.now()
        }
    }

    public func report(_ damage: DamageReport) throws(StoreError) {
        do {
            try FileSystem.makeDirectory(layout.reportsDir, mode: 0o700)
            try FileSystem.writeAtomically(JSONCoding.encode(damage, pretty: true), to: layout.report(damage.digest), tmpDir: tmpDir, mode: 0o600)
        } catch { throw StoreError(.io, "cannot record the damage to \(damage.path) in \(layout.reportsDir): \(error)") }
    }

    /// Every report; one that cannot be read still says that something was found there.
    public func damageReports() throws(StoreError) -> [DamageReport] {
        guard FileSystem.exists(layout.reportsDir) else { return [] }
        let names: [String]
        do { names = try FileSystem.names(in: layout.reportsDir) } catch {
            throw StoreError(.io, "cannot list the damage reports in \(layout.reportsDir): \(error)")
        }
        return names.sorted().compactMap { name -> DamageReport? in
            guard name.hasSuffix(".json"), let digest = try? Digest(hex: String(name.dropLast(5))) else { return nil }
            let path = "\(layout.reportsDir)/\(name)"
            do {
                return try JSONCoding.decode(DamageReport.self, from: try FileSystem.readFile(path), what: path)
            } catch {
                return DamageReport(digest: digest, path: path, offset: 0, problem: "a damage report that cannot be read (\(error))", image: nil)
            }
        }
    }

    /// Whether a mount found this layer's or file's bytes damaged (a pull fetches it again).
    public func hasReport(_ digest: Digest) -> Bool { FileSystem.exists(layout.report(digest)) }

    public func clearReport(_ digest: Digest) throws(StoreError) {
        let path = layout.report(digest)
        guard FileSystem.exists(path) else { return }
        do { try FileSystem.remove(path) } catch { throw StoreError(.io, "cannot remove \(path): \(error)") }
    }
}
