import Layers
import Logging
import OCI
import Store

/// What a manifest's layers become: tars checked against the config's diff_ids for an image,
/// files laid out by `ArtifactLayout` for an artifact.
struct PullPlan: Sendable {
    /// One layer to bring in: what it becomes and, for an image, the diff_id its config promises.
    struct Layer: Sendable {
        var descriptor: Descriptor
        var content: LayerContent
        var expectedDiffID: Digest?
        var file: ArtifactFile? {
            if case .file(let file) = content { return file }
            return nil
        }
    }

    var layers: [Layer]
    var platform: String?
    var created: String?

    init(_ manifest: Manifest, configBytes: [UInt8], reference: Reference) throws {
        if ArtifactLayout.isImage(manifest) {
            let config = try JSONCoding.decode(ImageConfig.self, from: configBytes, what: "image config of \(reference)")
            let diffIDs = config.rootfs?.diffIDs ?? []
            guard diffIDs.count == manifest.layers.count else {
                throw PullError(.invalidImage, "image \(reference) lists \(manifest.layers.count) layers but its config has \(diffIDs.count) diff_ids; the image is inconsistent")
            }
            layers = zip(manifest.layers, diffIDs).map { layer, diffID in
                Layer(descriptor: layer, content: .tar(LayerCompression(layerMediaType: layer.mediaType) ?? .none), expectedDiffID: diffID)
            }
            platform = [config.os, config.architecture, config.variant].compactMap { $0 }.joined(separator: "/")
            created = config.created
            return
        }
        let contents: [LayerContent]
        do { contents = try ArtifactLayout.plan(manifest) } catch {
            throw PullError(.invalidImage, "\(reference): \(error)")
        }
        layers = zip(manifest.layers, contents).map { Layer(descriptor: $0, content: $1, expectedDiffID: nil) }
        platform = nil
        // An artifact's config is often not an image config at all: then it has no date.
        created = manifest.annotations?[ArtifactLayout.createdAnnotation]
            ?? (try? JSONCoding.decode(ImageConfig.self, from: configBytes, what: "config"))?.created
    }

    /// A single-platform image (no index to choose from) built for another platform: an error
    /// when the user named the platform, else a warning (podman's habit: it may run emulated).
    func checkPlatform(_ wanted: Platform, chosen: Bool, reference: Reference, logger: Logger) throws {
        guard let platform, let built = try? Platform(parsing: platform), !wanted.matches(built) else { return }
        if chosen {
            throw PullError(.noMatchingPlatform, "image \(reference) is built for \(platform) only, not \(wanted); "
                + "pull it without --platform, or pick an image that offers \(wanted)")
        }
        logger.warning("image \(reference) is built for \(platform), not this host's \(wanted)")
    }

    /// The image record once every layer is in, `diffIDs` in layer order.
    func record(_ resolved: ResolvedImage, diffIDs: [Digest]) -> ImageRecord {
        ImageRecord(
            digest: resolved.fetched.digest, manifestMediaType: resolved.fetched.mediaType, indexDigest: resolved.indexDigest,
            configDigest: resolved.manifest.config.digest,
            layers: diffIDs.indices.map { recordLayer($0, diffID: diffIDs[$0]) },
            platform: platform, created: created, pulledAt: UTCTimestamp.now())
    }

    /// Layer `position` of the record, once it is in the store as `diffID`.
    func recordLayer(_ position: Int, diffID: Digest) -> ImageRecord.Layer {
        let job = layers[position]
        return ImageRecord.Layer(digest: job.descriptor.digest, mediaType: job.descriptor.mediaType, size: job.descriptor.size,
                                 diffID: diffID, file: job.file)
    }
}
