// Target `manifest`: `ManifestDocument.decode(bytes, contentType:)` (OCI/Manifest.swift) with any
// Content-Type, and image config decoding. The first byte chooses the header: below 0x80 one
// from the table (or none), else the next (byte & 0x3f) bytes are the header text; the rest is
// the body. Property: a decoded document encodes to JSON that decodes to the same value.
import OCI

let contentTypes: [String?] = [
    nil, "", ";", " ; charset=x", "application/json", "text/plain", "text/plain; charset=utf-8",
    MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest, MediaType.dockerManifestList,
    MediaType.dockerSchema1, MediaType.dockerSchema1Signed, MediaType.ociIndex + "; charset=utf-8",
    " " + MediaType.dockerManifest + " ", "application/octet-stream",
]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzManifest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = bytes(data, size)
    guard let first = input.first else { return 0 }
    var body = Array(input.dropFirst())
    let contentType: String?
    if first < 0x80 {
        contentType = contentTypes[Int(first) % contentTypes.count]
    } else {
        let n = min(Int(first & 0x3f), body.count)
        contentType = String(decoding: body.prefix(n), as: UTF8.self)
        body.removeFirst(n)
    }
    if let document = try? ManifestDocument.decode(body, contentType: contentType) {
        switch document {
        case .image(let manifest):
            let json = JSONCoding.encode(manifest)
            guard let again = try? JSONCoding.decode(Manifest.self, from: json, what: "re-encoded manifest") else { violated("manifest does not decode from its own JSON") }
            guard again == manifest else { violated("manifest changes through JSON") }
        case .index(let index):
            let json = JSONCoding.encode(index)
            guard let again = try? JSONCoding.decode(Index.self, from: json, what: "re-encoded index") else { violated("index does not decode from its own JSON") }
            guard again == index else { violated("index changes through JSON") }
            for platform in [Platform(os: "linux", architecture: "amd64"), Platform(os: "linux", architecture: "arm64", variant: "v8"),
                             Platform(os: "linux", architecture: "arm", variant: "v7")] {
                _ = index.manifest(for: platform)
            }
            _ = index.platforms.map(\.description)
        }
    }
    if let config = try? JSONCoding.decode(ImageConfig.self, from: body, what: "image config") {
        let json = JSONCoding.encode(config)
        guard let again = try? JSONCoding.decode(ImageConfig.self, from: json, what: "re-encoded config"), again == config else {
            violated("image config changes through JSON")
        }
    }
    return 0
}
