/// How the layers of a manifest become one directory tree, whatever tool packaged them.
///
/// An image (image config, tar layers) is a stack of tar layers. Anything else is an artifact:
/// each layer is either a tar unpacked at the root (ModelPack `.tar*`, KitOps, ORAS directory
/// pushes) or one raw file whose path comes from the packager's annotation or, failing that,
/// from a name its media type implies (Docker model, Ollama) or its digest.
public enum ArtifactLayout {
    public static let titleAnnotation = "org.opencontainers.image.title"
    public static let createdAnnotation = "org.opencontainers.image.created"
    public static let orasUnpackAnnotation = "io.deis.oras.content.unpack"
    public static let modelFilepathAnnotation = "org.cncf.model.filepath"
    public static let modelFileMetadataAnnotation = "org.cncf.model.file.metadata+json"

    /// True for a plain image: an image config and only tar layers without file names.
    public static func isImage(_ manifest: Manifest) -> Bool {
        guard manifest.config.mediaType == MediaType.ociConfig || manifest.config.mediaType == MediaType.dockerConfig else {
            return false
        }
        return manifest.layers.allSatisfy { layer in
            LayerCompression(layerMediaType: layer.mediaType) != nil && !isOrasFile(layer)
        }
    }

    /// What each layer of an artifact becomes, in manifest order. Refuses names that would
    /// leave the tree and two layers claiming one path.
    public static func plan(_ manifest: Manifest) throws(OCIError) -> [LayerContent] {
        let defaultMtime = manifest.annotations?[createdAnnotation].flatMap(RFC3339.seconds) ?? 0
        var taken: Set<String> = []
        var defaultNameCounts: [String: Int] = [:]
        var result: [LayerContent] = []
        for layer in manifest.layers {
            if let compression = tarCompression(of: layer) {
                result.append(.tar(compression))
                continue
            }
            var file: ArtifactFile
            if let explicit = explicitName(of: layer) {
                file = ArtifactFile(path: try safePath(explicit, layer: layer), mtimeSeconds: defaultMtime)
            } else if let implied = impliedName(of: layer.mediaType) {
                let count = defaultNameCounts[implied, default: 0] + 1
                defaultNameCounts[implied] = count
                file = ArtifactFile(path: numbered(implied, count), mtimeSeconds: defaultMtime)
            } else {
                file = ArtifactFile(path: layer.digest.description, mtimeSeconds: defaultMtime)
            }
            if let json = layer.annotations?[modelFileMetadataAnnotation] {
                try file.apply(metadataJSON: json, layer: layer)
            }
            guard taken.insert(file.path).inserted else {
                throw OCIError(.invalidDocument, "artifact layer \(layer.digest)",
                               "its file name \"\(file.path)\" is used by another layer too; each file needs its own name")
            }
            result.append(.file(file))
        }
        return result
    }

    /// The tar compression of a layer that unpacks at the root, nil for a raw file.
    static func tarCompression(of layer: Descriptor) -> LayerCompression? {
        if isOrasFile(layer) { return nil }
        if let known = LayerCompression(layerMediaType: layer.mediaType) { return known }
        let base = MediaType.base(layer.mediaType)
        if base.hasSuffix(".tar") { return LayerCompression.none }
        if base.hasSuffix(".tar+gzip") || base.hasSuffix(".tar.gzip") { return .gzip }
        if base.hasSuffix(".tar+zstd") || base.hasSuffix(".tar.zstd") { return .zstd }
        return nil
    }

    /// ORAS pushes a file with its name as title and, by default, the OCI tar media type; only
    /// a directory push (marked for unpacking) is really a tar.
    static func isOrasFile(_ layer: Descriptor) -> Bool {
        guard let annotations = layer.annotations, annotations[titleAnnotation] != nil else { return false }
        if annotations[modelFilepathAnnotation] != nil, !layer.mediaType.hasPrefix("application/vnd.oci.image.layer.") {
            return false
        }
        return annotations[orasUnpackAnnotation] != "true"
    }

    static func explicitName(of layer: Descriptor) -> String? {
        layer.annotations?[modelFilepathAnnotation] ?? layer.annotations?[titleAnnotation]
    }

    /// File names that model packagers imply by media type.
    static func impliedName(of mediaType: String) -> String? {
        switch MediaType.base(mediaType) {
        case "application/vnd.docker.ai.gguf.v3", "application/vnd.docker.ai.model.file.v1+gguf": "model.gguf"
        case "application/vnd.docker.ai.safetensors": "model.safetensors"
        case "application/vnd.docker.ai.dduf": "model.dduf"
        case "application/vnd.docker.ai.mmproj": "model.mmproj"
        case "application/vnd.docker.ai.license": "LICENSE"
        case "application/vnd.docker.ai.chat.template.jinja": "template.jinja"
        case "application/vnd.ollama.image.model": "model.gguf"
        case "application/vnd.ollama.image.adapter": "adapter.gguf"
        case "application/vnd.ollama.image.projector": "projector.gguf"
        case "application/vnd.ollama.image.template", "application/vnd.ollama.image.prompt": "template"
        case "application/vnd.ollama.image.system": "system"
        case "application/vnd.ollama.image.params": "params.json"
        case "application/vnd.ollama.image.messages": "messages.json"
        case "application/vnd.ollama.image.license": "LICENSE"
        default: nil
        }
    }

    /// `model.gguf`, `model-2.gguf`, `model-3.gguf`…; `LICENSE`, `LICENSE-2`…
    static func numbered(_ name: String, _ count: Int) -> String {
        guard count > 1 else { return name }
        if let dot = name.lastIndex(of: "."), dot != name.startIndex {
            return "\(name[..<dot])-\(count)\(name[dot...])"
        }
        return "\(name)-\(count)"
    }

    /// A relative path inside the tree: no absolute names, no `..`, no empty name.
    static func safePath(_ name: String, layer: Descriptor) throws(OCIError) -> String {
        let what = "file name \"\(name)\" of artifact layer \(layer.digest)"
        guard name.utf8.first != UInt8(ascii: "/") else {
            throw OCIError(.invalidDocument, what, "it is absolute; artifact files must stay inside the mount, so the artifact was refused")
        }
        let parts = PathComponents.split(name).filter { !PathComponents.isCurrent($0) }
        guard !parts.contains(where: PathComponents.isParent) else {
            throw OCIError(.invalidDocument, what, "it contains \"..\"; artifact files must stay inside the mount, so the artifact was refused")
        }
        guard !parts.isEmpty, !name.contains("\0") else {
            throw OCIError(.invalidDocument, what, "it names no file")
        }
        return parts.joined(separator: "/")
    }
}

/// One layer of an artifact as the tree sees it.
public enum LayerContent: Sendable, Equatable {
    /// A tar unpacked at the root.
    case tar(LayerCompression)
    /// The blob itself is one file.
    case file(ArtifactFile)
}
