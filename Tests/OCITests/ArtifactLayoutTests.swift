import OCI
import Testing

@Suite("ArtifactLayout")
struct ArtifactLayoutTests {
    static func layer(_ mediaType: String, _ seed: String, _ annotations: [String: String]? = nil) -> Descriptor {
        Descriptor(mediaType: mediaType, digest: Digest.of(Array(seed.utf8)), size: Int64(seed.utf8.count), annotations: annotations)
    }

    static func manifest(config: String = MediaType.ociEmpty, _ layers: [Descriptor]) -> Manifest {
        Manifest(config: Descriptor(mediaType: config, digest: Digest.of([]), size: 0), layers: layers)
    }

    static func paths(_ plan: [LayerContent]) -> [String] {
        plan.map { content in
            switch content {
            case .tar(let compression): "tar:\(compression.rawValue)"
            case .file(let file): file.path
            }
        }
    }

    @Test func imagesStayImages() {
        let image = Self.manifest(config: MediaType.ociConfig, [Self.layer(MediaType.ociLayerGzip, "a"), Self.layer(MediaType.ociLayer, "b")])
        #expect(ArtifactLayout.isImage(image))
        let oras = Self.manifest(config: MediaType.ociConfig, [Self.layer(MediaType.ociLayer, "a", [ArtifactLayout.titleAnnotation: "w.bin"])])
        #expect(!ArtifactLayout.isImage(oras))
        let ollama = Self.manifest(config: MediaType.dockerConfig, [Self.layer("application/vnd.ollama.image.model", "m")])
        #expect(!ArtifactLayout.isImage(ollama))
    }

    @Test func orasFilesAndDirectories() throws {
        let plan = try ArtifactLayout.plan(Self.manifest([
            Self.layer(MediaType.ociLayer, "a", [ArtifactLayout.titleAnnotation: "models/w.bin"]),
            Self.layer(MediaType.ociLayerGzip, "b", [ArtifactLayout.titleAnnotation: "docs", ArtifactLayout.orasUnpackAnnotation: "true"]),
            Self.layer("text/plain", "c", [ArtifactLayout.titleAnnotation: "./notes//readme.txt"]),
        ]))
        #expect(Self.paths(plan) == ["models/w.bin", "tar:gzip", "notes/readme.txt"])
    }

    @Test func modelPackRawFilesCarryTheirMetadata() throws {
        let metadata = #"{"name":"model.safetensors","mode":384,"uid":1000,"gid":1001,"size":1,"mtime":"2025-03-15T14:30:00Z","typeflag":0}"#
        let plan = try ArtifactLayout.plan(Self.manifest(config: "application/vnd.cncf.model.config.v1+json", [
            Self.layer("application/vnd.cncf.model.weight.v1.raw", "w", [
                ArtifactLayout.titleAnnotation: "model.safetensors",
                ArtifactLayout.modelFilepathAnnotation: "model.safetensors",
                ArtifactLayout.modelFileMetadataAnnotation: metadata]),
            Self.layer("application/vnd.cncf.model.weight.config.v1.tar", "c", [ArtifactLayout.modelFilepathAnnotation: "config.json"]),
            Self.layer("application/vnd.cncf.model.doc.v1.tar+zstd", "d"),
        ]))
        guard case .file(let file) = plan[0] else { Issue.record("weight is not a file"); return }
        #expect(file == ArtifactFile(path: "model.safetensors", mode: 0o600, uid: 1000, gid: 1001, mtimeSeconds: 1_742_049_000))
        #expect(Self.paths(Array(plan.dropFirst())) == ["tar:none", "tar:zstd"])
    }

    @Test func kitOpsLayersAreTars() throws {
        let plan = try ArtifactLayout.plan(Self.manifest(config: "application/vnd.kitops.modelkit.config.v1+json", [
            Self.layer("application/vnd.kitops.modelkit.model.v1.tar+gzip", "m"),
            Self.layer("application/vnd.kitops.modelkit.docs.v1.tar", "d"),
            Self.layer("application/vnd.kitops.modelkit.dataset.v1.tar+zstd", "s"),
        ]))
        #expect(Self.paths(plan) == ["tar:gzip", "tar:none", "tar:zstd"])
    }

    @Test func dockerAndOllamaNamesAreImplied() throws {
        let plan = try ArtifactLayout.plan(Self.manifest(config: MediaType.dockerConfig, [
            Self.layer("application/vnd.docker.ai.gguf.v3", "1"),
            Self.layer("application/vnd.docker.ai.gguf.v3", "2"),
            Self.layer("application/vnd.docker.ai.license", "3"),
            Self.layer("application/vnd.docker.ai.license", "4"),
            Self.layer("application/vnd.ollama.image.template; name=chat", "5"),
            Self.layer("application/vnd.ollama.image.params", "6"),
            Self.layer("application/vnd.docker.ai.safetensors", "7", [ArtifactLayout.titleAnnotation: "shard-1.safetensors"]),
        ]))
        #expect(Self.paths(plan) == ["model.gguf", "model-2.gguf", "LICENSE", "LICENSE-2", "template", "params.json", "shard-1.safetensors"])
    }

    @Test func unnamedLayersAreNamedByDigest() throws {
        let blob = Self.layer("application/x-unknown", "x")
        #expect(Self.paths(try ArtifactLayout.plan(Self.manifest([blob]))) == [blob.digest.description])
    }

    @Test("escaping or clashing names are refused", arguments: [
        ["../escape.bin"], ["/etc/passwd"], ["a/../../b"], ["same.bin", "./same.bin"], [".."],
        ["../\u{301}escape.bin"], ["a/../../\u{301}b"], ["/\u{301}etc/passwd"],
    ])
    func refused(titles: [String]) {
        let layers = titles.enumerated().map { Self.layer("application/octet-stream", "\($0.offset)", [ArtifactLayout.titleAnnotation: $0.element]) }
        #expect(throws: OCIError.self) { try ArtifactLayout.plan(Self.manifest(layers)) }
    }

    @Test("RFC 3339", arguments: [
        ("1970-01-01T00:00:00Z", Int64(0)), ("2025-03-15T14:30:00Z", 1_742_049_000),
        ("2025-03-15T16:30:00.123+02:00", 1_742_049_000), ("2000-02-29T00:00:00Z", 951_782_400),
    ])
    func rfc3339(text: String, seconds: Int64) {
        #expect(RFC3339.seconds(text) == seconds)
    }
}
