import Foundation
import OCI
import Testing

private let configDigest = "sha256:" + String(repeating: "c", count: 64)
private let layerDigest = "sha256:" + String(repeating: "1", count: 64)
private let childDigest = "sha256:" + String(repeating: "2", count: 64)

private func manifestJSON(mediaType: String?, configType: String, layerType: String) -> [UInt8] {
    let mt = mediaType.map { #""mediaType": "\#($0)","# } ?? ""
    return Array("""
    {"schemaVersion": 2, \(mt)
     "config": {"mediaType": "\(configType)", "digest": "\(configDigest)", "size": 7023},
     "layers": [{"mediaType": "\(layerType)", "digest": "\(layerDigest)", "size": 32654,
                 "annotations": {"k": "v"}}]}
    """.utf8)
}

private func indexJSON(mediaType: String, entryType: String) -> [UInt8] {
    Array("""
    {"schemaVersion": 2, "mediaType": "\(mediaType)",
     "manifests": [
       {"mediaType": "\(entryType)", "digest": "\(childDigest)", "size": 528,
        "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}},
       {"mediaType": "\(entryType)", "digest": "\(layerDigest)", "size": 529,
        "platform": {"architecture": "amd64", "os": "linux"}}
     ]}
    """.utf8)
}

@Suite("ManifestDocument.decode")
struct ManifestDocumentTests {
    @Test("image manifests", arguments: [
        (MediaType.ociManifest, MediaType.ociConfig, MediaType.ociLayerGzip),
        (MediaType.dockerManifest, MediaType.dockerConfig, MediaType.dockerLayerGzip),
    ])
    func manifest(type: String, configType: String, layerType: String) throws {
        let bytes = manifestJSON(mediaType: type, configType: configType, layerType: layerType)
        for contentType in [type, nil, "application/json", type + "; charset=utf-8"] as [String?] {
            guard case .image(let m) = try ManifestDocument.decode(bytes, contentType: contentType) else {
                Issue.record("expected an image manifest for content type \(String(describing: contentType))")
                continue
            }
            #expect(m.schemaVersion == 2)
            #expect(m.mediaType == type)
            #expect(m.config.digest.description == configDigest)
            #expect(m.config.size == 7023)
            #expect(m.config.mediaType == configType)
            #expect(m.layers.count == 1)
            #expect(m.layers[0].digest.description == layerDigest)
            #expect(m.layers[0].size == 32654)
            #expect(m.layers[0].mediaType == layerType)
            #expect(m.layers[0].annotations == ["k": "v"])
        }
    }

    @Test func ociManifestWithoutMediaTypeField() throws {
        let bytes = manifestJSON(mediaType: nil, configType: MediaType.ociConfig, layerType: MediaType.ociLayer)
        guard case .image(let m) = try ManifestDocument.decode(bytes, contentType: nil) else {
            Issue.record("expected an image manifest"); return
        }
        #expect(m.mediaType == nil)
        #expect(m.layers.count == 1)
    }

    @Test("indexes", arguments: [
        (MediaType.ociIndex, MediaType.ociManifest),
        (MediaType.dockerManifestList, MediaType.dockerManifest),
    ])
    func index(type: String, entryType: String) throws {
        let bytes = indexJSON(mediaType: type, entryType: entryType)
        for contentType in [type, nil, "text/plain"] as [String?] {
            guard case .index(let index) = try ManifestDocument.decode(bytes, contentType: contentType) else {
                Issue.record("expected an index"); continue
            }
            #expect(index.mediaType == type)
            #expect(index.manifests.count == 2)
            #expect(index.manifests[0].platform == Platform(os: "linux", architecture: "arm", variant: "v7"))
            #expect(index.manifests[1].size == 529)
            #expect(index.manifest(for: Platform(os: "linux", architecture: "amd64"))?.digest.description == layerDigest)
        }
    }

    @Test("schema1 refused", arguments: [
        (MediaType.dockerSchema1Signed as String?, #"{"schemaVersion": 1, "name": "x", "tag": "latest", "fsLayers": []}"#),
        (MediaType.dockerSchema1, #"{"schemaVersion": 1, "name": "x", "tag": "latest", "fsLayers": []}"#),
        ("application/json", #"{"schemaVersion": 1, "name": "x", "tag": "latest", "fsLayers": []}"#),
        (nil, #"{"schemaVersion": 1, "name": "x", "tag": "latest", "fsLayers": []}"#),
    ])
    func schema1(contentType: String?, body: String) {
        do {
            _ = try ManifestDocument.decode(Array(body.utf8), contentType: contentType)
            Issue.record("schema1 was accepted")
        } catch {
            #expect(error.kind == .unsupportedMediaType)
            #expect(error.description.contains("schema1"))
        }
    }

    @Test("unknown media type refused", arguments: [
        "application/vnd.example.thing+json",
        "application/vnd.oci.image.config.v1+json",
    ])
    func unknown(contentType: String) {
        let bytes = manifestJSON(mediaType: nil, configType: MediaType.ociConfig, layerType: MediaType.ociLayer)
        do {
            _ = try ManifestDocument.decode(bytes, contentType: contentType)
            Issue.record("accepted \(contentType)")
        } catch {
            #expect(error.kind == .unsupportedMediaType)
            #expect(error.input == contentType)
        }
    }

    @Test func unknownDeclaredMediaTypeRefused() {
        let bytes = Array(#"{"schemaVersion": 2, "mediaType": "application/vnd.cncf.helm.chart.v1+json"}"#.utf8)
        #expect(throws: OCIError(.unsupportedMediaType, "application/vnd.cncf.helm.chart.v1+json", "expected an OCI or Docker image manifest or index")) {
            try ManifestDocument.decode(bytes, contentType: nil)
        }
    }

    @Test("invalid documents", arguments: [
        "not json",
        "[]",
        #"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}"#,
        #"{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:abc", "size": 1}, "layers": []}"#,
        #"{"schemaVersion": 2, "manifests": "nope"}"#,
    ])
    func invalid(body: String) {
        let contentType: String? = body.contains("manifests") ? MediaType.ociIndex : nil
        do {
            _ = try ManifestDocument.decode(Array(body.utf8), contentType: contentType)
            Issue.record("accepted \(body)")
        } catch {
            #expect(error.kind == .invalidDocument)
        }
    }

    /// A registry controls the header: nothing it sends may trap (an empty split used to).
    @Test("odd Content-Type headers fall back to the document's mediaType",
          arguments: ["", ";", " ; charset=x", ";;;", " ", "\t;", "garbage", "\u{0}\u{FF}x;y=z", "; application/vnd.oci.image.index.v1+json"])
    func oddContentType(header: String) throws {
        let bytes = manifestJSON(mediaType: MediaType.ociManifest, configType: MediaType.ociConfig, layerType: MediaType.ociLayerGzip)
        do {
            guard case .image = try ManifestDocument.decode(bytes, contentType: header) else {
                Issue.record("\(header.debugDescription) did not give an image manifest")
                return
            }
        } catch {
            // Garbage is an unsupported type, reported, not a crash.
            #expect(error.kind == .unsupportedMediaType, "\(header.debugDescription): \(error)")
        }
    }

    @Test("garbage bodies under odd headers are errors, not traps",
          arguments: ["", ";", " ; charset=x", "garbage", MediaType.ociIndex])
    func garbageBody(header: String) {
        for body in [[], [0xFF, 0xFE, 0x00], Array("{".utf8), Array("\"x\"".utf8), Array("{\"schemaVersion\": \"two\"}".utf8)] as [[UInt8]] {
            do {
                _ = try ManifestDocument.decode(body, contentType: header)
                Issue.record("accepted \(body) under \(header.debugDescription)")
            } catch {
                #expect(error.kind == .invalidDocument || error.kind == .unsupportedMediaType)
            }
        }
    }

    @Test func layerCompressionFromMediaType() {
        #expect(LayerCompression(layerMediaType: MediaType.ociLayer) == LayerCompression.none)
        #expect(LayerCompression(layerMediaType: MediaType.ociLayerGzip) == .gzip)
        #expect(LayerCompression(layerMediaType: MediaType.dockerLayerGzip) == .gzip)
        #expect(LayerCompression(layerMediaType: MediaType.ociLayerZstd) == .zstd)
        #expect(LayerCompression(layerMediaType: MediaType.ociConfig) == nil)
    }
}
