import FileIO
import OCI

/// Finding cached images: by reference for a platform (what a mount or a pull policy asks),
/// or by whatever a user typed (`inspect`, `rm`).
extension ContentStore {
    /// An image whose every layer is present. A damaged record counts as not cached, so a
    /// pull rewrites it; damaged names are an error.
    public func completeImage(_ reference: Reference) throws(StoreError) -> ImageRecord? {
        let digest: Digest?
        if let named = reference.digest, hasImage(named) { digest = named } else { digest = try self.digest(for: reference) }
        guard let digest, let record = try? readImage(digest), record.layers.allSatisfy({ hasLayer($0) }) else { return nil }
        return record
    }

    /// A complete cached image of `reference` for `platform`. A reference names the manifest
    /// pulled last, whatever its platform, so for a multi-arch reference the other manifests
    /// of the same index are looked at too.
    public func completeImage(_ reference: Reference, platform: Platform) throws(StoreError) -> ImageRecord? {
        guard let record = try completeImage(reference) else { return nil }
        if record.runs(on: platform) { return record }
        guard let index = record.indexDigest else { return nil }
        for digest in try listImages() {
            guard let sibling = try? readImage(digest), sibling.indexDigest == index, sibling.runs(on: platform),
                  sibling.layers.allSatisfy({ hasLayer($0) }) else { continue }
            return sibling
        }
        return nil
    }

    /// Finds a cached image by reference text, full digest, or digest prefix (as `podman rmi` does).
    /// Its record is not read here: `rm` must work on an image whose record is damaged.
    public func lookup(_ text: String) throws -> (names: [String], digest: Digest) {
        let refs = try references()
        if let reference = try? Reference(text), let digest = refs[reference.description] ?? reference.digest.flatMap({ hasImage($0) ? $0 : nil }) {
            return (refs.filter { $0.value == digest }.map(\.key).sorted(), digest)
        }
        let hex = text.hasPrefix("sha256:") ? String(text.dropFirst(7)) : text
        if hex.count >= 6, hex.allSatisfy(\.isHexDigit) {
            let matches = try listImages().filter { $0.hex.hasPrefix(hex) }
            if matches.count == 1, let digest = matches.first {
                return (refs.filter { $0.value == digest }.map(\.key).sorted(), digest)
            }
        }
        _ = try Reference(text)
        throw StoreError(.notFound, "image \(text) is not in the store at \(root); see `imgvol images`")
    }
}

extension ImageRecord {
    /// Images without a platform in their config (artifacts) run anywhere.
    public func runs(on platform: Platform) -> Bool {
        guard let text = self.platform, let recorded = try? Platform(parsing: text) else { return true }
        return platform.matches(recorded)
    }
}
