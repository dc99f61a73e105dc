import ArgumentParser
import Foundation
import OCI
import Store

struct Inspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show a cached image's manifest and config as JSON.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Image reference or digest (prefix) of a pulled image.")
    var reference: String

    func run() async throws {
        let store = try global.openStore()
        let (names, digest) = try store.lookup(reference)
        let record = try store.readImage(digest)
        let manifest = try JSONSerialization.jsonObject(with: Data(try store.readBlob(record.digest)))
        let config = try JSONSerialization.jsonObject(with: Data(try store.readBlob(record.configDigest)))
        var object: [String: Any] = [
            "reference": names.first ?? reference,
            "names": names,
            "digest": record.digest.description,
            "mediaType": record.manifestMediaType,
            "manifest": manifest,
            "config": config,
            "size": store.diskUsage(of: record),
        ]
        if let index = record.indexDigest { object["indexDigest"] = index.description }
        let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        print(String(decoding: data, as: UTF8.self))
    }
}
